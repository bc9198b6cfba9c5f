"""Training engines for the ``cpu`` device: verl's own FSDP engines, registered for ``cpu``.

``EngineRegistry`` keys engines by (model type, backend, device); verl registers its FSDP
engines for ``cuda`` and ``npu`` only. With the ``cpu`` platform (:mod:`.platform`) the same
classes run on the CPU: FSDP2 ``fully_shard`` over a gloo mesh, and every ``get_device_id()``
that the engine moves tensors to is ``"cpu"``. So the CPU engine *is* verl's engine; only the
registry key is new.
"""

from __future__ import annotations

DEVICE = "cpu"
BACKENDS = ["fsdp", "fsdp2"]


def register_engines() -> None:
    """Register verl's FSDP language-model and value-model engines under device ``cpu``."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import (
        FSDPEngineWithLMHead,
        FSDPEngineWithValueHead,
    )

    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        missing = [b for b in BACKENDS if DEVICE not in EngineRegistry._engines.get(model_type, {}).get(b, {})]
        if missing:
            EngineRegistry.register(model_type=model_type, backend=missing, device=DEVICE)(engine_cls)
