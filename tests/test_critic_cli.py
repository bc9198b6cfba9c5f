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


def test_evaluate_writes_json_and_png(workdir, trained, capsys):
    rc, out, _ = _run(
        [
            "evaluate",
            "--critic",
            str(trained),
            "--data",
            str(workdir / "test.parquet"),
            "--out-dir",
            str(workdir / "report"),
        ],
        capsys,
    )
    assert rc == 0
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    m = metrics["metrics"]
    assert m["n"] > 0 and np.isfinite([m["nll"], m["rmse"], m["coverage_50"], m["coverage_90"]]).all()
    assert "baseline_constant" in metrics and "by_group" in metrics and "coverage_curve" in metrics
    png = (workdir / "report" / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # on the training file itself only the held-out slice is scored by default
    rc, out, _ = _run(
        [
            "evaluate",
            "--critic",
            str(trained),
            "--data",
            str(workdir / "train.parquet"),
            "--out-dir",
            str(workdir / "report_train"),
        ],
        capsys,
    )
    rep = json.loads((workdir / "report_train" / "metrics.json").read_text())
    assert rc == 0 and rep["points_excluded_as_training"] > 0 and rep["metrics"]["n"] > 0


@pytest.mark.parametrize("filler", ["critic", "user_knn", "item_knn"])
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


def test_knn_evaluate(workdir, capsys):
    rc, out, _ = _run(
        [
            "evaluate",
            "--filler",
            "item_knn",
            "--knn-data",
            str(workdir / "train.parquet"),
            "--data",
            str(workdir / "test.parquet"),
            "--out-dir",
            str(workdir / "knn_report"),
        ],
        capsys,
    )
    assert rc == 0 and out["metrics_summary"]["n"] > 0


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
    rc, res, err = _run(["evaluate", "--critic", str(ckpt), "--data", str(test), "--out-dir", str(out / "rep")], capsys)
    assert rc == 0 and res["metrics_summary"]["n"] > 0, err
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
