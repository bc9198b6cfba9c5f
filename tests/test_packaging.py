"""The package works without the clone: nothing under verl_flexrec/ reaches into the repository,
the recipes ship and are found from an install, data preparation has a package entry point that
writes the same bytes as the clone's scripts, one atomic writer, clear errors for missing extras.

(.ci/run proves the same from a built wheel in an empty folder, the tiny job's setup and
``--check`` included.)
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fixtures_raw import run_script, write_movielens
from verl_flexrec.atomic import AtomicFiles, atomic_dir, atomic_path, write_text_atomic
from verl_flexrec.recipes import config_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "verl_flexrec"
REPO_ONLY = ("tests", "fixtures_raw", "fixtures_ml100k", "data_prep", "benchmarks", "conftest")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_library_code_never_imports_or_runs_repository_files(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        else:
            names = []
        assert not [n for n in names if n.split(".")[0] in REPO_ONLY], (path, node.lineno)
        # a path into the clone in code (docstrings may mention the clone's scripts)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert not any(p in node.value for p in ("data_prep/", "recipes/flexrec/", "fixtures_raw")), (path, node.value)
            assert node.value not in ("tests", "data_prep", "recipes", "benchmarks"), (path, node.value)  # REPO / "tests"
        if isinstance(node, ast.Attribute) and node.attr == "parents" and any(
                isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(node.value)):
            pytest.fail(f"{path}:{node.lineno}: Path(__file__).parents walks out of the package")


def test_recipes_path_prints_the_packaged_config_folder():
    out = subprocess.run([sys.executable, "-m", "verl_flexrec", "recipes-path"], capture_output=True, text=True,
                         check=True, timeout=60)
    folder = Path(out.stdout.strip())
    assert folder == config_dir() and folder.is_relative_to(PACKAGE)
    assert {"flexrec_base.yaml", "flexrec_trainer.yaml", "tiny_cpu.yaml"} <= {p.name for p in folder.iterdir()}
    assert sorted(p.stem for p in (folder / "baseline").glob("*.yaml")) == ["no_uncertainty", "none", "rank_grpo", "rec_r1"]


def test_a_users_own_config_composes_flexrec_base_from_the_package(tmp_path):
    """The documented way to use the seam in a config of one's own: pkg:// search path, no clone."""
    from hydra import compose, initialize_config_dir

    (tmp_path / "mine.yaml").write_text(
        "hydra:\n  searchpath:\n    - pkg://verl.trainer.config\n    - pkg://verl_flexrec.recipes.config\n"
        "defaults:\n  - ppo_trainer\n  - flexrec_base\n  - _self_\n"
        "actor_rollout_ref:\n  rollout:\n    n: 4\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(config_name="mine")
    assert (cfg.algorithm.adv_estimator, cfg.reward.reward_manager.name) == ("flexrec", "flexrec")
    assert cfg.trainer.v1.trainer_mode == "flexrec_sync" and cfg.actor_rollout_ref.rollout.n == 4


def test_check_config_passes_the_tiny_job_and_names_what_is_wrong(capsys):
    from verl_flexrec.recipes.check import main

    data = ["data.train_files=/d/train.parquet", "data.val_files=/d/test.parquet", "actor_rollout_ref.model.path=/m"]
    assert main(["--config-name", "tiny_cpu", *data]) == 0
    assert "ok: tiny_cpu" in capsys.readouterr().out
    assert main(["--config-name", "tiny_cpu", *data, "actor_rollout_ref.actor.kl_los_coef=0.1"]) == 1
    assert "kl_los_coef" in capsys.readouterr().out
    assert main(["--config-name", "tiny_cpu", *data, "algorithm.flexrec.advantage.mode=nope"]) == 1
    assert "nope" in capsys.readouterr().out


def test_tiny_job_overrides_follow_the_environment(tmp_path):
    from verl_flexrec.cpu.tiny_job import overrides_for, parse

    work, rest, check = parse(["run", "a=1", "--check"])
    assert work == Path("run").resolve() and rest == ["a=1"] and check
    assert parse(["a=1"])[:2] == (Path("tiny_cpu_run").resolve(), ["a=1"])
    fixture = overrides_for(tmp_path, {}, "run1")
    assert f"actor_rollout_ref.model.path={tmp_path / 'model'}" in fixture
    # checkpoints are keyed by the run name: resume_mode=auto resumes only the run of the same name
    assert f"trainer.default_local_dir={tmp_path / 'checkpoints' / 'run1'}" in fixture
    assert "trainer.experiment_name=run1" in fixture
    assert not any(o.startswith("data.max_prompt_length") for o in fixture)
    mine = overrides_for(tmp_path, {"TRAIN_FILE": "t", "CKPT_DIR": "/ck"}, "run2")
    assert "data.max_prompt_length=2560" in mine and "trainer.default_local_dir=/ck/checkpoints/run2" in mine


def test_tiny_job_run_names_are_fresh_unless_given():
    from verl_flexrec.cpu.tiny_job import run_name

    assert run_name({"RUN_NAME": "mine"}) == "mine"
    assert re.fullmatch(r"tiny_cpu_\d{8}_\d{6}", run_name({}))
    with pytest.raises(SystemExit, match="plain folder name"):
        run_name({"RUN_NAME": "a/b"})


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_python_m_verl_flexrec_data_writes_what_the_clone_script_writes(tmp_path):
    from verl_flexrec.data.__main__ import main

    raw = write_movielens(tmp_path / "raw")
    flags = ["--raw-dir", raw, "--num-candidates", "10", "--needs", "all", "--sparse-frac", "0.3"]
    script = run_script("movielens", *flags, "--out-dir", tmp_path / "script")
    assert script.returncode == 0, script.stderr
    assert main(["movielens", *map(str, flags), "--out-dir", str(tmp_path / "module"), "--no-progress"]) == 0
    assert _digests(tmp_path / "script") == _digests(tmp_path / "module")
    assert set(_digests(tmp_path / "module")) == {"interactions.parquet", "prep_info.json", "test.parquet",
                                                  "train.parquet"}
    assert main(["no_such_dataset"]) == 2
    assert main(["movielens", "--raw-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_atomic_path_renames_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "results.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png"  # writers that pick the format by suffix
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.png"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_atomic_files_appear_together_or_not_at_all(tmp_path):
    with pytest.raises(KeyError):
        with AtomicFiles(tmp_path / "out") as out:
            out.path("a.json").write_text("1")
            out.path("b.json").write_text("2")
            raise KeyError("late failure")
    assert list((tmp_path / "out").iterdir()) == []
    with AtomicFiles(tmp_path / "out") as out:
        out.path("a.json").write_text("1")
        out.path("b.json").write_text("2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.json"]


def test_atomic_dir_replaces_the_folder_and_clears_a_killed_runs_leftovers(tmp_path):
    final, tmp = tmp_path / "step", tmp_path / ".tmp-step"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "leftover").write_text("from a killed run")
    with pytest.raises(ValueError):
        with atomic_dir(final, tmp) as work:
            assert list(work.iterdir()) == []
            (work / "new.txt").write_text("half")
            raise ValueError
    assert [p.name for p in final.iterdir()] == ["old.txt"] and not tmp.exists()
    with atomic_dir(final, tmp) as work:
        (work / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"] and not tmp.exists()


def test_a_missing_eval_library_names_the_extra(monkeypatch):
    from verl_flexrec.evaluate import baselines
    from verl_flexrec.evaluate.data import TrainingInteractions
    from verl_flexrec.quickstart import DEFAULT_BASELINES, default_baselines

    monkeypatch.setitem(sys.modules, "implicit.cpu.bpr", None)  # import fails as if not installed
    train = TrainingInteractions(pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "interest": [1.0],
                                               "timestamp": [0.0]}), "test")
    with pytest.raises(baselines.BaselineError, match=r"bpr needs the 'implicit' package .*verl-flexrec\[eval\]"):
        baselines.make_ranker("bpr").fit(train, seed=0)
    monkeypatch.setattr(baselines, "available", lambda name: name not in baselines.EXTRA_LIBRARY)
    notes: list[str] = []
    assert default_baselines(notes) == ["random", "popularity", "trending"]
    assert "bpr, als, item_knn" in notes[0] and "verl-flexrec[eval]" in notes[0]
    assert len(DEFAULT_BASELINES) == 6


def test_version_is_the_installed_metadata():
    from importlib import metadata

    import verl_flexrec

    assert metadata.version("verl-flexrec") == verl_flexrec.__version__  # one home: pyproject reads the attribute
