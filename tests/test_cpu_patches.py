"""Guards for verl_flexrec.cpu.patches: fail when verl changes the code the CPU backend writes into.

Each test pins one assumption about verl 0.9.x; when one fails, re-read the function it names
and update (or drop) the corresponding entry in verl_flexrec/cpu/patches.py.
"""

import inspect
import os
import subprocess
import sys
import textwrap

import pytest


def test_verl_still_builds_a_duplicate_cpu_backend_string():
    # The reason for patch_process_group_init: on the cpu platform this is "cpu:gloo,cpu:gloo".
    from verl.utils import distributed

    src = inspect.getsource(distributed.initialize_global_process_group_ray)
    assert 'backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in src
    assert list(inspect.signature(distributed.initialize_global_process_group_ray).parameters) == [
        "timeout_second", "backend"]


def test_torch_rejects_the_duplicate_backend_string():
    from torch.distributed.distributed_c10d import BackendConfig

    with pytest.raises(ValueError, match="Duplicate device type cpu"):
        BackendConfig("cpu:gloo,cpu:gloo")


def test_the_training_worker_calls_the_function_by_its_imported_name():
    from verl.workers import engine_workers

    assert "initialize_global_process_group_ray(timeout_second=None)" in inspect.getsource(engine_workers.TrainingWorker.__init__)
    assert engine_workers.initialize_global_process_group_ray.__module__ == "verl.utils.distributed"


def test_rollout_class_table_has_no_register_function_and_resolves_our_key():
    from verl.workers.rollout import base

    assert isinstance(base._ROLLOUT_REGISTRY, dict)
    assert ("vllm", "async") in base._ROLLOUT_REGISTRY
    assert not hasattr(base, "register_rollout_class")  # if verl adds one, use it instead of the table
    assert "_ROLLOUT_REGISTRY[(rollout_name, mode)]" in inspect.getsource(base.get_rollout_class)


def test_gloo_only_backend():
    from verl_flexrec.cpu.patches import gloo_only_backend

    assert gloo_only_backend("cpu", None) == "cpu:gloo"
    assert gloo_only_backend("cpu", "cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert gloo_only_backend("cuda", None) is None


@pytest.mark.slow  # a fresh interpreter importing verl's workers
def test_patched_worker_process_group_initialises_on_cpu():
    # A fresh process on the cpu platform: verl's own TrainingWorker entry point now works.
    code = textwrap.dedent("""
        import torch.distributed as dist
        import verl  # loads the plugin, which patches when VERL_PLATFORM=cpu
        from verl.workers import engine_workers
        from verl.utils import distributed
        assert engine_workers.initialize_global_process_group_ray._flexrec_cpu_patched
        assert distributed.initialize_global_process_group_ray._flexrec_cpu_patched
        engine_workers.initialize_global_process_group_ray(timeout_second=60)
        assert "gloo" in str(dist.get_backend()) and dist.get_world_size() == 1
        dist.destroy_process_group()
        print("OK")
    """)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29617"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
