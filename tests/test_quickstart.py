"""python -m verl_flexrec.quickstart on a generated ML-100k (GroupLens layout): every step runs, the
closing summary shows the table and paths, a re-run reuses everything, changed settings and
interrupted steps re-run only what they affect, and a failing step leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_ml100k import write_ml100k_grouplens

pytestmark = pytest.mark.slow  # the pipeline in subprocesses, several times (~35 s of CPU)

REPO = Path(__file__).resolve().parents[1]
STEPS = ("data", "critic", "baselines")


def quickstart(workdir: Path, raw: Path, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "verl_flexrec.quickstart", "--workdir", workdir, "--raw-dir", raw,
           "--format", "ml-100k", "--critic-epochs", "2", "--threads", "1", "--baselines", "random", "popularity",
           *extra]
    if "--train-script" not in extra:
        cmd.append("--skip-train")  # the real tiny verl job runs in tests/test_e2e_tiny_cpu.py
    return subprocess.run([str(c) for c in cmd], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)


def signatures(workdir: Path) -> dict[str, str]:
    return {s: json.loads((workdir / s / "step.json").read_text())["signature"] for s in STEPS}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("qs")
    write_ml100k_grouplens(root / "raw")
    result = quickstart(root / "work", root / "raw")
    assert result.returncode == 0, result.stderr
    return root, result


def test_first_run_writes_every_step_and_prints_the_table(first):
    root, result = first
    work = root / "work"
    for name in ("data/train.parquet", "data/test.parquet", "data/interactions.parquet", "critic/critic.pt",
                 "critic/train_filled.parquet", "critic/report/metrics.json", "baselines/results.json",
                 "baselines/results.md", "baselines/results.png"):
        assert (work / name).is_file(), name
    assert not list(work.glob(".tmp-*"))
    assert (work / ".gitignore").read_text().splitlines()[-1] == "*"  # derived data never gets committed
    info = json.loads((work / "data" / "prep_info.json").read_text())
    assert info["dataset"] == "ml-100k" and info["settings"]["sparse_frac"] == 0.1
    assert set(info["settings"]["test_needs"]) == {"maximize_interest", "explore_new_topics", "trend_promotion"}
    out = result.stdout
    assert (work / "baselines" / "results.md").read_text().strip() in out  # the table itself
    for path in ("results.json", "results.png", "results.md"):
        assert str(work / "baselines" / path) in out
    critic = json.loads((work / "critic" / "step.json").read_text())
    assert f"critic held-out NLL {critic['heldout_nll']:.4f}" in out
    assert "[4/4] evaluate the baselines on the test rows: done" in result.stderr


def test_rerun_reuses_every_step(first):
    root, _ = first
    work = root / "work"
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    again = quickstart(work, root / "raw")
    assert again.returncode == 0, again.stderr
    for i, step in enumerate(STEPS, 2):
        assert f"[{i}/4] " in again.stderr
    assert again.stderr.count(": reused -> ") == 3
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == before


def test_changed_settings_and_interrupted_steps_rerun_only_what_they_affect(first, tmp_path):
    root, _ = first
    work = tmp_path / "work"
    import shutil

    shutil.copytree(root / "work", work)
    base = signatures(work)
    # an interrupted critic step: its temporary folder exists, the final one does not
    shutil.rmtree(work / "critic")
    (work / ".tmp-critic").mkdir()
    (work / ".tmp-critic" / "partial.pt").write_bytes(b"half")
    result = quickstart(work, root / "raw")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(": reused -> ") == 2  # data and baselines
    assert signatures(work) == base and not (work / ".tmp-critic").exists()
    # another seed changes everything downstream of the data
    result = quickstart(work, root / "raw", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert ": reused -> " not in result.stderr
    assert all(signatures(work)[s] != base[s] for s in STEPS)


def test_gain_reaches_the_table_and_reruns_only_the_baselines(first, tmp_path):
    root, _ = first
    work = tmp_path / "work"
    import shutil

    shutil.copytree(root / "work", work)
    base = signatures(work)
    linear = json.loads((work / "baselines" / "results.json").read_text())
    result = quickstart(work, root / "raw", "--gain", "exponential")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(": reused -> ") == 2  # data and critic
    assert signatures(work)["baselines"] != base["baselines"]
    exp = json.loads((work / "baselines" / "results.json").read_text())
    assert linear["meta"]["gain"] == "linear" and exp["meta"]["gain"] == "exponential"
    assert exp["floor"]["overall"]["ndcg@5"] < linear["floor"]["overall"]["ndcg@5"]  # 2^r - 1 on 1-5 ratings
    assert "**gain: exponential**" in result.stdout
    assert "| random floor (expected) |" in result.stdout and "| oracle ceiling |" in result.stdout


def test_failing_step_leaves_nothing_and_says_which(first, tmp_path):
    root, _ = first
    work = tmp_path / "work"
    import shutil

    shutil.copytree(root / "work", work)
    shutil.rmtree(work / "baselines")
    result = quickstart(work, root / "raw", "--baselines", "no_such_baseline")
    assert result.returncode == 2
    assert "error: baseline evaluation failed (exit 2)" in result.stderr
    assert not (work / "baselines").exists() and not (work / ".tmp-baselines").exists()


def test_with_train_runs_the_job_with_the_prepared_files(first, tmp_path):
    root, _ = first
    work = tmp_path / "work"
    import shutil

    shutil.copytree(root / "work", work)
    missing = quickstart(work, root / "raw", "--train-script", tmp_path / "absent.sh")
    assert missing.returncode == 0, missing.stderr
    assert f"train: skipped, {tmp_path / 'absent.sh'} is not in this checkout yet" in missing.stdout
    job = tmp_path / "job.sh"
    job.write_text('set -eu\ntest -f "$TRAIN_FILE" && test -f "$VAL_FILE"\n'
                   '"$PYTHON" -c "import os, json; json.dump({k: os.environ[k] for k in '
                   '(\'TRAIN_FILE\', \'VAL_FILE\')}, open(os.environ[\'CKPT_DIR\'] + \'/env.json\', \'w\'))"\n')
    result = quickstart(work, root / "raw", "--train-script", job)
    assert result.returncode == 0, result.stderr
    assert "[5/5] tiny FlexRec RL job on CPU: done" in result.stderr
    env = json.loads((work / "train" / "env.json").read_text())
    assert env == {"TRAIN_FILE": str(work / "critic" / "train_filled.parquet"),
                   "VAL_FILE": str(work / "data" / "test.parquet")}
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 3\n")
    result = quickstart(work, root / "raw", "--train-script", failing)
    assert result.returncode == 2 and "tiny CPU FlexRec training failed (exit 3)" in result.stderr
    assert not (work / ".tmp-train").exists()


def test_missing_raw_files_fail_cleanly(tmp_path):
    result = quickstart(tmp_path / "work", tmp_path / "nothing")
    assert result.returncode == 2
    assert "MovieLens-100k u.data: file not found" in result.stderr
    assert "error: data preparation failed" in result.stderr
    assert not (tmp_path / "work" / "data").exists()
