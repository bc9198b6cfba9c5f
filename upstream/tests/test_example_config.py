"""The series' example script composes into a config that verl's validate_config accepts.

Runs from ``upstream/check.sh`` against the patched tree (``FLEXREC_UPSTREAM_TREE``): the script
runs with ``python3`` replaced by a stub that records its arguments; the hydra overrides are then
composed with verl's ``ppo_trainer`` config and checked as verl's trainer would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

if not os.environ.get("FLEXREC_UPSTREAM_TREE"):
    pytest.skip("needs the patched verl tree: run `bash upstream/check.sh`", allow_module_level=True)

from hydra import compose, initialize_config_dir  # noqa: E402

from verl.trainer.ppo.core_algos import _flexrec_config  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402

TREE = Path(os.environ.get("FLEXREC_UPSTREAM_TREE", "."))
SCRIPT = TREE / "examples" / "flexrec_trainer" / "run_qwen2_5_3b_fsdp.sh"


def _overrides(tmp_path: Path, env: dict) -> list[str]:
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    stub.chmod(0o755)
    args_file = tmp_path / "args"
    run_env = {**os.environ, **env, "PATH": f"{stub.parent}:{os.environ['PATH']}", "ARGS_FILE": str(args_file)}
    subprocess.run(["bash", str(SCRIPT), "trainer.total_epochs=1"], env=run_env, check=True, capture_output=True)
    args = args_file.read_text().splitlines()
    assert args[:2] == ["-m", "verl.trainer.main_ppo"], args[:2]
    return args[2:]


@pytest.mark.parametrize("env", [{}, {"ITEM_NORM": "pooled", "USE_UNCERTAINTY": "False", "NGPUS_PER_NODE": "8"}])
def test_example_composes_and_validates(tmp_path, env):
    overrides = _overrides(tmp_path, env)
    with initialize_config_dir(config_dir=str(TREE / "verl" / "trainer" / "config"), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert cfg.algorithm.adv_estimator == "flexrec"
    assert cfg.trainer.total_epochs == 1  # extra arguments reach the trainer
    flexrec = _flexrec_config(cfg.algorithm)
    assert flexrec.item_norm == env.get("ITEM_NORM", "position")
    assert flexrec.use_uncertainty == (env.get("USE_UNCERTAINTY", "True") == "True")
