"""``python -m verl_flexrec.critic`` round trip on parquet written by the synthetic helper."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from verl_flexrec.critic.__main__ import main
from verl_flexrec.critic.synthetic import write_parquet


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("critic_cli")
    assert (
        main(
            [
                "synth",
                "--out-dir",
                str(d),
                "--users",
                "80",
                "--items",
                "120",
                "--density",
                "0.15",
                "--candidates",
                "20",
                "--lists-per-user",
                "3",
            ]
        )
        == 0
    )
    return d


@pytest.fixture(scope="module")
def trained(workdir):
    ckpt = workdir / "critic.pt"
    rc = main(
        [
            "train",
            "--data",
            str(workdir / "train.parquet"),
            "--out",
            str(ckpt),
            "--epochs",
            "6",
            "--ensemble",
            "2",
            "--hidden",
            "32,16",
            "--seed",
            "1",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0 and ckpt.is_file()
    return ckpt


def test_train_reports_summary(workdir, capsys):
    rc, out, _ = _run(
        [
            "train",
            "--data",
            str(workdir / "train.parquet"),
            "--out",
            str(workdir / "c2.pt"),
            "--epochs",
            "2",
            "--ensemble",
            "1",
            "--patience",
            "1",
            "--val-frac",
            "0.2",
            "--quiet",
            "--threads",
            "1",
        ],
        capsys,
    )
    assert rc == 0
    assert out["n_val"] > 0 and out["n_users"] > 0 and out["epochs_run"] <= 2 and out["var_scale"] > 0


def test_evaluate_compares_the_critic_with_every_baseline(workdir, trained, capsys):
    rep_dir = workdir / "report"
    rc, out, _ = _run(
        ["evaluate", "--critic", str(trained), "--data", str(workdir / "test.parquet"), "--train-data",
         str(workdir / "train.parquet"), "--out-dir", str(rep_dir), "--n-boot", "200", "--json"],
        capsys,
    )
    assert rc == 0
    assert set(out["fillers"]) == {"critic", "constant", "bias", "mf", "user_knn", "item_knn"}
    metrics = json.loads((rep_dir / "metrics.json").read_text())
    assert metrics["n"] == out["n"] > 0 and metrics["reference"] == "critic"
    for name, f in metrics["fillers"].items():
        m = f["metrics"]
        for key in ("nll", "rmse", "coverage_50", "coverage_90"):
            assert m[key]["low"] <= m[key]["mean"] <= m[key]["high"], (name, key)
        assert (f["vs_reference"] == {}) == (name == "critic")
        # mean-only baselines have one constant variance: no variance information
        assert (f["variance_information"] is None) == (name in ("constant", "bias", "mf")), name
    assert set(metrics["groups"]) >= {"user", "item"} and "goal" in metrics
    assert "/" not in "".join(metrics["data"] + metrics["train_data"])  # no machine paths in results
    png = (rep_dir / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (rep_dir / "report.md").read_text()
    assert "| critic |" in md and "Does the variance carry information?" in md
    # without --json the table itself is printed
    rc = main(["evaluate", "--critic", str(trained), "--data", str(workdir / "test.parquet"), "--train-data",
               str(workdir / "train.parquet"), "--out-dir", str(workdir / "report2"), "--n-boot", "0"])
    printed = capsys.readouterr().out
    assert rc == 0 and "| bias |" in printed and "Goals for `critic`" in printed
    # on its own training file nothing is held out: one clear error
    rc, _, err = _run(["evaluate", "--critic", str(trained), "--data", str(workdir / "train.parquet"),
                       "--out-dir", str(workdir / "report_train")], capsys)
    assert rc == 2 and "nothing is held out" in err and "--include-train" in err


@pytest.mark.parametrize("filler", ["critic", "user_knn", "item_knn", "bias"])
def test_fill_round_trip(workdir, trained, capsys, filler):
    src, dst = workdir / "train.parquet", workdir / f"filled_{filler}.parquet"
    args = ["fill", "--data", str(src), "--out", str(dst), "--filler", filler]
    if filler == "critic":
        args += ["--critic", str(trained)]
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and out["filled"] > 0
    n_var = 0
    for a, b in zip(
        pq.read_table(src).column("reward_model").to_pylist(), pq.read_table(dst).column("reward_model").to_pylist()
    ):
        obs = np.array(a["ground_truth"]["observed"])
        g, v = np.array(b["ground_truth"]["gains"]), np.array(b["ground_truth"]["gain_var"])
        assert np.isfinite(g).all() and np.isfinite(v).all()
        np.testing.assert_array_equal(g[obs], np.array(a["ground_truth"]["gains"])[obs])
        n_var += (v[~obs] > 0).sum()
    assert n_var == out["filled"]


def test_baselines_only_evaluate(workdir, capsys):
    rc, out, _ = _run(
        ["evaluate", "--baselines", "constant", "item_knn", "--train-data", str(workdir / "train.parquet"),
         "--data", str(workdir / "test.parquet"), "--out-dir", str(workdir / "knn_report"), "--json"],
        capsys,
    )
    assert rc == 0 and set(out["fillers"]) == {"constant", "item_knn"} and out["goal"] == {}
    rc, _, err = _run(["evaluate", "--data", str(workdir / "test.parquet"), "--out-dir", str(workdir / "x")], capsys)
    assert rc == 2 and "--train-data" in err


def test_bad_input_is_one_clear_error(workdir, trained, capsys, tmp_path):
    rows = pq.read_table(workdir / "train.parquet").to_pylist()
    rows[5]["reward_model"]["ground_truth"]["item_ids"] = []
    bad = write_parquet(rows, tmp_path / "bad.parquet")
    out = tmp_path / "out.parquet"
    rc, _, err = _run(["fill", "--critic", str(trained), "--data", str(bad), "--out", str(out)], capsys)
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1 and str(bad) in err and "row 5" in err and "ground_truth.item_ids" in err
    rc, _, err = _run(["train", "--data", str(bad), "--out", str(tmp_path / "c.pt"), "--quiet"], capsys)
    assert rc == 2 and "row 5" in err and not (tmp_path / "c.pt").exists()
    rc, _, err = _run(["fill", "--data", str(bad), "--out", str(out)], capsys)
    assert rc == 2 and "--critic" in err
    rc, _, err = _run(["fill", "--critic", str(tmp_path / "missing.pt"), "--data", str(bad), "--out", str(out)], capsys)
    assert rc == 2 and "missing.pt" in err


def test_module_entry_point_help():
    res = subprocess.run(
        [sys.executable, "-m", "verl_flexrec.critic", "fill", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "--filler" in res.stdout and "user_knn" in res.stdout


def test_train_evaluate_fill_on_data_prep_kuairec_fixture(tmp_path, capsys):
    """The CLI on parquet produced by data_prep/ (sparse KuaiRec, fixture raw files)."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    fixtures = pytest.importorskip("fixtures_raw")
    raw, out = tmp_path / "raw", tmp_path / "out"
    fixtures.write_kuairec(
        raw, small_users=20, big_users=40, n_items=300, small_items=150, big_per_user=150, big_first_item=50
    )
    code, err = fixtures.run_in_process(
        "kuairec", "--raw-dir", raw, "--out-dir", out, "--sparse-frac", "0.1", "--train-per-user", "3"
    )
    capsys.readouterr()
    assert code == 0, err
    train, test, ckpt = out / "train.parquet", out / "test.parquet", out / "critic.pt"
    rc, res, err = _run(
        [
            "train",
            "--data",
            str(train),
            "--out",
            str(ckpt),
            "--epochs",
            "5",
            "--ensemble",
            "2",
            "--threads",
            "1",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    rc, res, err = _run(["evaluate", "--critic", str(ckpt), "--data", str(test), "--train-data", str(train),
                         "--out-dir", str(out / "rep"), "--n-boot", "100", "--json"], capsys)
    assert rc == 0 and res["n"] > 0 and "critic" in res["fillers"] and "bias" in res["fillers"], err
    rep = json.loads((out / "rep" / "metrics.json").read_text())
    assert "time_since_cutoff" in rep["groups"]  # KuaiRec rows carry candidate_ts and cutoff_ts
    rc, res, err = _run(
        ["fill", "--critic", str(ckpt), "--data", str(train), "--out", str(out / "filled.parquet")], capsys
    )
    assert rc == 0 and res["filled"] > 0, err
    before = pq.read_table(train)
    after = pq.read_table(out / "filled.parquet")
    assert before.schema.equals(after.schema)
    for a, b in zip(before.column("reward_model").to_pylist(), after.column("reward_model").to_pylist()):
        obs = np.array(a["ground_truth"]["observed"])
        g, v = np.array(b["ground_truth"]["gains"]), np.array(b["ground_truth"]["gain_var"])
        assert np.isfinite(g).all() and np.isfinite(v).all() and len(v) == len(obs)
        np.testing.assert_array_equal(g[obs], np.array(a["ground_truth"]["gains"])[obs])
        assert (v[obs] == 0).all() and (v[~obs] >= 0).all()
