"""``python -m verl_flexrec doctor``: is FlexRec visible to verl in this environment?

verl loads plugins through the ``verl.plugins`` entry point and hides their errors at DEBUG
level; this check imports verl the way every Ray worker does and asserts each FlexRec name is
bound to FlexRec's object, printing the real traceback when the plugin failed to load.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import traceback

__all__ = ["run_doctor"]


def _lookup(registry: str, name: str):
    if registry == "reward_manager":
        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

        return REWARD_MANAGER.get(name)
    if registry == "adv_estimator":
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

        return ADV_ESTIMATOR_REGISTRY.get(name)
    if registry == "trainer":
        from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

        try:
            return get_trainer_cls(name)
        except Exception:  # noqa: BLE001
            return None
    raise ValueError(f"doctor does not know registry {registry!r}")


def run_doctor(print_fn=print) -> bool:
    """Print a report; return True when every FlexRec name is registered in verl."""
    ok = True
    eps = [ep for ep in md.entry_points(group="verl.plugins") if ep.value.startswith("verl_flexrec")]
    if eps:
        print_fn(f"[ok]   entry point verl.plugins: {', '.join(f'{ep.name} = {ep.value}' for ep in eps)}")
    else:
        ok = False
        print_fn("[FAIL] no verl.plugins entry point for verl_flexrec: is the package installed (pip install -e .)?")
    policy = os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto")
    if policy.strip().lower() == "none":
        print_fn("[warn] VERL_USE_EXTERNAL_PLUGINS=none disables plugin loading; set VERL_USE_EXTERNAL_MODULES=verl_flexrec.register")

    import verl

    from .provenance import plugin_build

    print_fn(f"[info] verl {verl.__version__} at {os.path.dirname(verl.__file__)}")
    print_fn(f"[info] verl-flexrec {plugin_build()} (version+source digest: compare it across nodes; docs/cluster.md)")
    from .integration import REGISTERED_NAMES

    # Check what `import verl` alone registered (what every Ray worker gets), before importing
    # our register module ourselves, which would hide a broken entry point.
    missing = []
    for registry, names in REGISTERED_NAMES.items():
        for name in names:
            obj = _lookup(registry, name)
            owner = getattr(obj, "__module__", "") or ""
            if obj is None:
                ok = False
                missing.append((registry, name))
                print_fn(f"[FAIL] {registry} {name!r} is not registered after `import verl`")
            elif registry == "adv_estimator" and owner.startswith("verl."):
                print_fn(f"[ok]   {registry} {name!r} -> {owner}.{obj.__name__} (verl's own, upstream FlexRec; "
                         "the plugin's estimator is not registered)")
            elif not owner.startswith("verl_flexrec"):
                ok = False
                print_fn(f"[FAIL] {registry} {name!r} is bound to {owner}.{getattr(obj, '__name__', obj)}, not FlexRec's")
            else:
                print_fn(f"[ok]   {registry} {name!r} -> {owner}.{obj.__name__}")
    if missing:
        try:
            importlib.import_module("verl_flexrec.register")
            print_fn("[info] importing verl_flexrec.register by hand works: verl did not load the entry point "
                     "(check VERL_USE_EXTERNAL_PLUGINS, or reinstall the package)")
        except Exception:  # noqa: BLE001 - show the error verl swallowed
            print_fn("[FAIL] importing verl_flexrec.register raised (verl hid this):\n" + traceback.format_exc())
    for module in ("transfer_queue",):
        try:
            importlib.import_module(module)
            print_fn(f"[ok]   {module} importable (verl's V1 trainer needs it)")
        except Exception as e:  # noqa: BLE001
            ok = False
            print_fn(f"[FAIL] {module} not importable ({e}); pip install transferqueue")
    from .needs import list_needs

    print_fn(f"[info] needs: {', '.join(list_needs())}")
    print_fn("FlexRec is ready." if ok else "FlexRec is NOT ready: fix the [FAIL] lines above.")
    return ok
