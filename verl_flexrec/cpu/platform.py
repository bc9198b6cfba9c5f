"""A verl platform for plain CPUs, registered as ``cpu`` in ``PlatformRegistry``.

verl routes every device call through ``verl.plugin.platform.get_platform()``. With no GPU it
falls back to the NVIDIA platform and the first ``torch.cuda`` call fails. This platform maps
the same calls onto the CPU:

* device ``"cpu"``, vendor ``"cpu"``; ``current_device()`` returns the string ``"cpu"``, so verl's
  ``tensor.to(get_device_id())`` / ``torch.device(get_device_id())`` land on the CPU;
* collectives over ``gloo``;
* Ray resource ``"GPU"``: verl's resource pool counts GPUs (``ResourcePoolManager``), so the CPU
  job starts Ray with logical GPUs (``ray_kwargs.ray_init.num_gpus``, one per training worker).
  Ray only books them; nothing touches a GPU.

It is never auto-detected: a job opts in with ``VERL_PLATFORM=cpu`` (verl's own override), so
GPU users are unaffected.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any

import psutil
import torch

PLATFORM_NAME = "cpu"


def _noop(*_args, **_kwargs) -> None:
    return None


def _zero(*_args, **_kwargs) -> int:
    return 0


def _mem_get_info(*_args, **_kwargs) -> tuple[int, int]:
    """(free, total) bytes of host memory, the CPU analogue of ``torch.cuda.mem_get_info``."""
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def build_device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda`` functions verl calls on its device module.

    Memory statistics report 0 (the CPU allocator keeps none); cache and IPC calls are no-ops;
    RNG state is torch's global CPU generator.
    """
    module = types.ModuleType("verl_flexrec_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(module, name, getattr(torch.cpu, name))
    module.current_device = lambda: "cpu"
    module.device_count = lambda: 1
    module.is_available = lambda: True
    module.set_device = _noop
    module.empty_cache = _noop
    module.ipc_collect = _noop
    module.reset_peak_memory_stats = _noop
    module.set_per_process_memory_fraction = _noop
    module.memory_allocated = _zero
    module.memory_reserved = _zero
    module.max_memory_allocated = _zero
    module.max_memory_reserved = _zero
    module.mem_get_info = _mem_get_info
    module.get_device_name = lambda *_a, **_k: "cpu"
    module.get_rng_state = lambda *_a, **_k: torch.get_rng_state()
    module.set_rng_state = lambda state, *_a, **_k: torch.set_rng_state(state)
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.memory = types.SimpleNamespace(_set_allocator_settings=_noop)
    return module


def build_platform_class() -> type:
    """The ``PlatformBase`` subclass (built lazily so importing this module stays cheap)."""
    from verl.plugin.platform.platform_base import PlatformBase

    device_module = build_device_module()

    class PlatformCPU(PlatformBase):
        """verl platform for CPU-only machines (see module docstring)."""

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self) -> types.ModuleType:
            return device_module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            # Opt-in only (VERL_PLATFORM=cpu): auto-detection must keep picking GPUs.
            return False

        def current_device(self) -> str:  # type: ignore[override] - a device string, see docstring
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: int | None = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None

    return PlatformCPU


def register_platform() -> None:
    """Add ``cpu`` to verl's ``PlatformRegistry`` unless something already registered it."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(build_platform_class())


def cpu_platform_selected() -> bool:
    """True when this process runs with ``VERL_PLATFORM=cpu``."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME
