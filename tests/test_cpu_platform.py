"""verl_flexrec.cpu registration: opt-in CPU platform, cpu engines, hf_cpu rollout, dump trainer.

Each case runs in a fresh interpreter (verl resolves its platform once per process).
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # three fresh interpreters importing verl (~20 s of CPU)


def _run(code: str, **env) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True, check=False,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_cpu_platform_engines_and_rollout_when_selected():
    out = _run("""
        import torch, verl
        from verl.plugin.platform import get_platform
        from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead
        from verl.workers.rollout.base import BaseRollout, get_rollout_class
        from verl.workers.rollout.replica import RolloutReplica, get_rollout_replica_class
        assert get_device_name() == "cpu" and get_nccl_backend() == "gloo"
        assert torch.zeros(1).to(get_device_id()).device.type == "cpu"
        dev = get_torch_device()
        dev.empty_cache(); dev.synchronize()
        free, total = dev.mem_get_info()
        assert 0 < free <= total and dev.memory_allocated() == 0
        assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is FSDPEngineWithLMHead
        assert EngineRegistry.get_engine_cls("value_model", "fsdp") is FSDPEngineWithValueHead
        assert issubclass(get_rollout_replica_class("hf_cpu"), RolloutReplica)
        assert issubclass(get_rollout_class("hf_cpu", "async"), BaseRollout)
        # idempotent: a second registration pass changes nothing and raises nothing
        import importlib, verl_flexrec.cpu.register as r
        r.register_all()
        print("OK")
    """, VERL_PLATFORM="cpu")
    assert "OK" in out


def test_without_opt_in_gpu_users_see_only_new_names():
    out = _run("""
        import verl
        from verl.plugin.platform.platform_manager import PlatformRegistry, _detect_platform_name
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.rollout import base
        from verl.workers.rollout.replica import RolloutReplicaRegistry
        assert PlatformRegistry.get("cpu") is not None
        assert not PlatformRegistry.get("cpu")().is_platform_available(use_smi_check=True)
        assert _detect_platform_name() != "cpu"
        assert "hf_cpu" in RolloutReplicaRegistry._registry
        # the cpu engines and the worker-side rollout class stay unregistered
        assert ("hf_cpu", "async") not in base._ROLLOUT_REGISTRY
        import verl.workers.engine  # noqa: F401 - the built-in registrations
        assert all("cpu" not in by_device for by_backend in EngineRegistry._engines.values()
                   for by_device in by_backend.values())
        print("OK")
    """)
    assert "OK" in out


def test_dump_trainer_registers_with_verls_v1_trainer():
    out = _run("""
        import verl
        from verl.trainer.ppo.v1 import get_trainer_cls
        from verl_flexrec.integration.trainer import FlexRecTrainerSync, is_flexrec_trainer_mode
        cls = get_trainer_cls("flexrec_sync_dump")
        assert issubclass(cls, FlexRecTrainerSync) and is_flexrec_trainer_mode("flexrec_sync_dump")
        print("OK")
    """)
    assert "OK" in out
