"""The only places where FlexRec's CPU support writes into verl without a registry API.

Both apply only in processes started with ``VERL_PLATFORM=cpu``; ``tests/test_cpu_patches.py``
fails when verl changes the code either relies on.

* ``verl.workers.rollout.base._ROLLOUT_REGISTRY[("hf_cpu", "async")]``: the worker-side rollout
  class that ``ActorRolloutRefWorker.init_model`` builds (``get_rollout_class``). Smallest
  upstream change: a ``register_rollout_class(name, mode, fqn)`` function next to
  ``get_rollout_class`` (the replica side already has ``RolloutReplicaRegistry.register``).
"""

from __future__ import annotations

ROLLOUT_ADAPTER_FQN = "verl_flexrec.cpu.rollout.HFCPURolloutAdapter"


def register_rollout_adapter() -> None:
    """Add ``("hf_cpu", "async") -> HFCPURolloutAdapter`` to verl's worker-side rollout table."""
    from verl.workers.rollout import base

    from .rollout import ROLLOUT_NAME

    table = base._ROLLOUT_REGISTRY
    key = (ROLLOUT_NAME, "async")
    if table.get(key, ROLLOUT_ADAPTER_FQN) != ROLLOUT_ADAPTER_FQN:
        raise RuntimeError(f"verl already maps {key} to {table[key]}; refusing to replace it")
    table[key] = ROLLOUT_ADAPTER_FQN


# ---------------------------------------------------------------------------------------------
# verl.utils.distributed.initialize_global_process_group_ray
# ---------------------------------------------------------------------------------------------
# It builds the backend string f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}", which on the
# cpu platform is "cpu:gloo,cpu:gloo"; torch rejects a device type listed twice. No platform
# value avoids the duplicate, so this is the one function we wrap: on the cpu platform, with no
# explicit backend, it passes backend="cpu:gloo" and otherwise calls verl's function unchanged.
# Smallest upstream change: in that function, use "cpu:gloo" alone when get_device_name() == "cpu".
PATCHED_MARK = "_flexrec_cpu_patched"
PROCESS_GROUP_MODULES = ("verl.utils.distributed", "verl.workers.engine_workers")


def gloo_only_backend(device_name: str, backend: str | None) -> str | None:
    """The backend to pass on: ``"cpu:gloo"`` for the cpu device when none was given, else ``backend``."""
    if backend is None and device_name == "cpu":
        return "cpu:gloo"
    return backend


def patch_process_group_init() -> None:
    """Wrap ``initialize_global_process_group_ray`` where verl defined it and where the worker imported it."""
    import importlib

    from verl.utils.device import get_device_name

    for module_name in PROCESS_GROUP_MODULES:
        module = importlib.import_module(module_name)
        original = module.initialize_global_process_group_ray
        if getattr(original, PATCHED_MARK, False):
            continue

        def wrapped(timeout_second=None, backend=None, _original=original):
            return _original(timeout_second=timeout_second, backend=gloo_only_backend(get_device_name(), backend))

        setattr(wrapped, PATCHED_MARK, True)
        wrapped.__wrapped__ = original
        module.initialize_global_process_group_ray = wrapped
