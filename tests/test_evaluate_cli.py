"""``python -m verl_flexrec.evaluate`` end to end: baselines, the HF backend on a tiny model, policies."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.evaluate import evaluate  # noqa: E402
from verl_flexrec.evaluate.backends import hf_generator  # noqa: E402
from verl_flexrec.evaluate.cli import main  # noqa: E402
from verl_flexrec.evaluate.shuffle import row_permutation  # noqa: E402
from verl_flexrec.parsing import complete_ranking, format_answer, parse_ranking  # noqa: E402
from verl_flexrec.testing import build_tiny_model, build_tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ml(ml_prepared):
    return ml_prepared


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(build_tiny_tokenizer(), folder)
    return folder


def _raw_rows(path):
    """(key fields, observed gains, candidates, prompt text) per row, straight from the parquet."""
    out = []
    for r in pq.read_table(path).to_pylist():
        gt = r["reward_model"]["ground_truth"]
        gains = [g if o else 0.0 for g, o in zip(gt["gains"], gt["observed"])]
        out.append({"gains": gains, "candidates": gt["candidates"], "prompt": r["prompt"][-1]["content"]})
    return out


def _ndcg(ranked, all_gains, k):
    d = [1 / math.log2(i + 2) for i in range(len(ranked))]
    ideal = sum(g * d[i] for i, g in enumerate(sorted(all_gains, reverse=True)[:k]))
    return sum(g * d[i] for i, g in enumerate(ranked[:k])) / ideal


def test_cli_baselines_write_json_markdown_and_png(ml, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "verl_flexrec.evaluate", "--data", ml / "test.parquet", "--baseline", "random",
           "--baseline", "popularity,trending", "--out-dir", out, "--bootstrap", "100", "--no-progress"]
    result = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == ["random", "popularity", "trending"]
    assert results["meta"]["rows"] == 30 and results["meta"]["train_interactions"]["pairs"] > 0
    md = (out / "results.md").read_text()
    assert "| random floor (expected) |" in md and md.count("| popularity |") >= 2
    assert "policy `strict`" in md and "policy `complete`" in md and "by need" in md
    for name, s in results["systems"].items():
        assert f"| {name} | 1.000 | {s['overall']['strict']['ndcg@5']['mean']:.3f}" in md
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out / "results.png").shape[0] > 100
    assert result.stdout.startswith("# FlexRec evaluation")
    # paths relative to the results folder, none absolute
    for written in ("results.json", "results.md"):
        text = (out / written).read_text()
        assert str(tmp_path) not in text and str(ml) not in text, written
    meta = results["meta"]
    assert (out / meta["data"]).resolve() == (ml / "test.parquet").resolve()
    source, origin = meta["train_interactions"]["source"].split(" ", 1)
    assert (out / source).resolve() == (ml / "interactions.parquet").resolve() and origin == "(observed pairs)"
    assert f"--data {meta['data']} " in meta["command"] and "--out-dir . " in meta["command"]


def test_hf_backend_end_to_end_on_a_tiny_model(ml, tiny_model, tmp_path):
    out = tmp_path / "model_eval"
    code = main(["--data", str(ml / "test.parquet"), "--model", str(tiny_model), "--backend", "hf", "--limit", "2",
                 "--max-new-tokens", "8", "--batch-size", "3", "--shuffle-seeds", "1", "--bootstrap", "50",
                 "--out-dir", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    system = results["systems"][tiny_model.name]
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["order"] for r in records} == {0, 1}
    raw = _raw_rows(ml / "test.parquet")
    for r in records:
        parsed = parse_ranking(r["response"], r["candidates"])
        assert r["valid"] == parsed.valid and r["error"] == (parsed.error.value if parsed.error else "")
        if r["order"] == 0:  # the 'complete' policy: what the model ranked, then the rest in prompt order
            gains = raw[r["row"]]["gains"]
            ranked = [gains[int(c) - 1] for c in complete_ranking(parsed, r["candidates"])]
            assert r["metrics"]["complete"]["ndcg@10"] == pytest.approx(_ndcg(ranked, gains, 10) if any(gains) else 0.0)
            if not parsed.valid:
                assert r["metrics"]["strict"]["ndcg@10"] == 0.0
    first = [r for r in records if r["order"] == 0]
    assert system["overall"]["valid_ratio"] == pytest.approx(np.mean([r["valid"] for r in first]))
    assert system["kind"] == "model" and "position_bias" in system
    assert (out / "results.md").is_file() and (out / "results.png").is_file()


def test_hf_left_padding_batches_like_single_prompts(ml, tiny_model):
    prompts = [[{"role": "user", "content": r["prompt"][: 80 + 60 * i]}] for i, r in enumerate(_raw_rows(ml / "test.parquet")[:3])]
    batched = hf_generator(str(tiny_model), batch_size=3, max_new_tokens=6, progress=False)(prompts)
    single = hf_generator(str(tiny_model), batch_size=1, max_new_tokens=6, progress=False)
    assert batched == [single([p])[0] for p in prompts]


def _lookup(ml):
    """prompt text -> (candidates, gains), so a fake model can answer from the prompt alone."""
    return {r["prompt"]: (r["candidates"], r["gains"]) for r in _raw_rows(ml / "test.parquet")}


def test_generator_oracle_partial_and_position_biased_answers(ml):
    table = _lookup(ml)
    raw = _raw_rows(ml / "test.parquet")
    scored = [r for r in raw if any(r["gains"])]

    def oracle(prompts):
        out = []
        for m in prompts:
            cands, gains = table[m[-1]["content"]]
            out.append(format_answer([c for _, c in sorted(zip(gains, cands), key=lambda t: -t[0])]))
        return out

    res = evaluate(ml / "test.parquet", generator=oracle, model_name="oracle-llm", n_boot=50, progress=False)
    s = res["systems"]["oracle-llm"]
    assert s["overall"]["valid_ratio"] == 1.0 and s["overall"]["strict"]["ndcg@10"]["mean"] == pytest.approx(1.0)

    def partial(prompts):  # the first three ids in prompt order, then stops
        return ["<think>x</think><answer>[1, 2, 3]</answer>" for _ in prompts]

    res = evaluate(ml / "test.parquet", generator=partial, model_name="partial", n_boot=50, progress=False)
    s = res["systems"]["partial"]
    assert s["overall"]["valid_ratio"] == 0.0 and s["errors"] == {"missing_ids": 30}
    assert all(s["overall"]["strict"][m]["mean"] == 0.0 for m in s["overall"]["strict"])
    prompt_order = np.mean([_ndcg(r["gains"], r["gains"], 10) for r in scored])
    assert s["overall"]["complete"]["ndcg@10"]["mean"] == pytest.approx(prompt_order)

    def in_prompt_order(prompts):  # a model that copies the list: pure position bias
        out = []
        for m in prompts:
            ids = [line.split(" | ")[0][3:] for line in m[-1]["content"].split("\n") if line.startswith("ID ")]
            out.append(format_answer(ids))
        return out

    res = evaluate(ml / "test.parquet", generator=in_prompt_order, model_name="copy", shuffle_seeds=2, seed=5,
                   n_boot=50, progress=False)
    bias = res["systems"]["copy"]["position_bias"]["strict"]["ndcg@10"]
    rows = [r for r in pq.read_table(ml / "test.parquet").to_pylist()]
    expected = []
    for s in range(3):
        values = []
        for n, r in enumerate(rows):
            gains = raw[n]["gains"]
            if not any(gains):
                continue
            info = r["extra_info"]
            key = f"{info['dataset']}|{info['user_id']}|{info['need']}|{info['index']}|{n}"
            perm = row_permutation(5, s, key, len(gains)) if s else np.arange(len(gains))
            values.append(_ndcg([gains[p] for p in perm], gains, 10))
        expected.append(np.mean(values))
    assert bias["per_order"] == pytest.approx(expected)
    assert bias["spread"] > 0


def test_cli_errors_are_one_line(ml, tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.parquet"), "--baseline", "random", "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.parquet'}: file not found"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "x"}]], "other": [1]}), bad)
    assert main(["--data", str(bad), "--baseline", "random", "--out-dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: row 0: field 'reward_model' is missing"
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["--data", str(ml / "test.parquet"), "--out-dir", str(tmp_path)])  # neither model nor baseline
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert main(["--data", str(ml / "test.parquet"), "--model", "x", "--backend", "vllm",
                     "--out-dir", str(tmp_path)]) == 2
        assert "vllm" in capsys.readouterr().err


def test_hand_written_rows_with_json_ground_truth(tmp_path):
    """No extra_info, ground truth as a JSON string, dataset ids as candidate ids."""
    truth = {"candidates": ["a1", "b2", "c3", "d4"], "gains": [0.0, 2.0, 1.0, 0.0], "need": "maximize_interest"}
    prompt = [{"role": "user", "content": "Rank:\nID a1 | x\nID b2 | y\nID c3 | z\nID d4 | w\nAnswer."}]
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"prompt": [prompt] * 3,
                             "reward_model": [{"style": "rule", "ground_truth": json.dumps(truth)}] * 3}), path)
    res = evaluate(path, baselines=["oracle", "reversed_oracle", "random"], shuffle_seeds=2, n_boot=20, progress=False)
    assert res["systems"]["oracle"]["overall"]["strict"]["ndcg@10"]["mean"] == pytest.approx(1.0)
    minimum = (1 / math.log2(4) + 2 / math.log2(5)) / (2 + 1 / math.log2(3))
    assert res["systems"]["reversed_oracle"]["overall"]["strict"]["ndcg@10"]["mean"] == pytest.approx(minimum)
    assert res["meta"]["users"] == 3  # no user id: each row is its own bootstrap unit


def test_cli_gain_exponential_end_to_end(ml, tmp_path):
    """``--gain exponential``: systems, random floor and oracle ceiling all use 2^g - 1, and the
    tables say so; checked against NDCG computed here from the raw parquet with transformed gains."""
    outs = {}
    for gain in ("linear", "exponential"):
        outs[gain] = tmp_path / gain
        assert main(["--data", str(ml / "test.parquet"), "--baseline", "reversed_oracle,oracle", "--gain", gain,
                     "--bootstrap", "20", "--out-dir", str(outs[gain]), "--no-progress"]) == 0
    res = json.loads((outs["exponential"] / "results.json").read_text())
    lin = json.loads((outs["linear"] / "results.json").read_text())
    assert res["meta"]["gain"] == "exponential" and lin["meta"]["gain"] == "linear"
    scored = [r["gains"] for r in _raw_rows(ml / "test.parquet") if any(r["gains"])]
    exp_gains = [[2.0 ** g - 1.0 for g in gains] for gains in scored]
    worst = np.mean([_ndcg(sorted(g), g, 10) for g in exp_gains])
    assert res["systems"]["reversed_oracle"]["overall"]["strict"]["ndcg@10"]["mean"] == pytest.approx(worst)
    assert lin["systems"]["reversed_oracle"]["overall"]["strict"]["ndcg@10"]["mean"] == pytest.approx(
        np.mean([_ndcg(sorted(g), g, 10) for g in scored]))
    d = [1 / math.log2(i + 2) for i in range(10)]
    floor = np.mean([np.mean(g) * sum(d[:5]) / sum(x * d[i] for i, x in enumerate(sorted(g, reverse=True)[:5]))
                     for g in exp_gains])
    assert res["floor"]["overall"]["ndcg@5"] == pytest.approx(floor)
    assert res["floor"]["overall"]["ndcg@5"] != pytest.approx(lin["floor"]["overall"]["ndcg@5"])
    assert res["ceiling"]["overall"]["ndcg@5"] == pytest.approx(1.0)
    assert res["ceiling"]["overall"]["recall@5"] == pytest.approx(
        res["systems"]["oracle"]["overall"]["strict"]["recall@5"]["mean"])
    md = (outs["exponential"] / "results.md").read_text()
    assert "**gain: exponential**" in md and "2^g − 1" in md
    assert f"| random floor (expected) | – | {floor:.3f} |" in md and "| oracle ceiling | – | 1.000 |" in md
    # floor and ceiling head the per-need table too
    need_table = md.split("## NDCG@10 by need")[1]
    assert "| random floor (expected) |" in need_table and "| oracle ceiling |" in need_table


def test_sample_is_a_seeded_subset_that_keeps_row_numbers(ml, tmp_path):
    from verl_flexrec.evaluate.data import EvalDataError, load_rows

    every = load_rows(ml / "test.parquet")
    a = load_rows(ml / "test.parquet", sample=7, seed=3)
    assert [r.index for r in a] == [r.index for r in load_rows(ml / "test.parquet", sample=7, seed=3)]
    assert len(a) == 7 and [r.index for r in a] == sorted(r.index for r in a)
    assert [r.index for r in a] != [r.index for r in load_rows(ml / "test.parquet", sample=7, seed=4)]
    for r in a:  # the same row, key and all, as in the full read
        assert r == every[r.index]
    assert len(load_rows(ml / "test.parquet", sample=1000)) == len(every)
    with pytest.raises(EvalDataError, match="not both"):
        load_rows(ml / "test.parquet", 5, sample=5)
    out = tmp_path / "sampled"
    assert main(["--data", str(ml / "test.parquet"), "--baseline", "random", "--sample", "7", "--seed", "3",
                 "--bootstrap", "0", "--out-dir", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["rows"] == 7 and res["meta"]["sample"] == 7
    assert "a random sample of 7 rows" in (out / "results.md").read_text()
