"""Prompt lengths are measured as verl measures them, recorded, and an overlong limit is refused.

References: counts from verl's own ``RLHFDataset`` filter (``maybe_filter_out_long_prompts``: the
rows verl keeps at a given ``max_prompt_length``), and for Qwen2 the ``tiktoken`` encoding of the
ChatML text (the reference implementation of Qwen2's BPE, independent of ``transformers``).
The ``network`` tests fetch ``qwen.tiktoken`` from PyPI (the ``qwen-agent`` wheel).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from verl_flexrec.data import prompt_lengths as pl
from verl_flexrec.data.io import DataPrepError


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    from verl_flexrec.testing import build_tiny_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer(out)
    return out


@pytest.fixture()
def prepared(ml_prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(ml_prepared, out)
    return out


def _verl_kept(data_dir, tokenizer, limit: int) -> int:
    """Rows of test.parquet verl's RLHFDataset keeps with filter_overlong_prompts at ``limit``."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = OmegaConf.create({"max_prompt_length": limit, "filter_overlong_prompts": True, "prompt_key": "prompt",
                            "filter_overlong_prompts_workers": 1, "return_raw_chat": True})
    return len(RLHFDataset(data_files=[str(data_dir / "test.parquet")], tokenizer=tokenizer, config=cfg))


def test_summary_and_rounding_against_numpy():
    counts = np.array([5, 100, 37, 1000, 64])
    s = pl.summarise_lengths(counts)
    assert (s["rows"], s["min"], s["max"], s["p50"]) == (5, 5, 1000, 64)
    assert s["p99"] == int(np.ceil(np.percentile(counts, 99)))
    assert pl.prompt_length_for(1000, 32) == 1088 and pl.prompt_length_for(992, 32) == 1024
    assert pl.summarise_lengths(np.array([], dtype=int)) == {"rows": 0}


def test_measure_matches_verls_filter_and_records_prep_info(prepared, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    result = pl.measure(prepared, str(tiny_tokenizer_dir), progress=False)
    info = json.loads((prepared / "prep_info.json").read_text())
    assert info["prompt_tokens"] == result and "rows" in info  # the data-prep record is kept
    longest = result["test"]["max"]
    assert result["max_prompt_length"] >= longest + pl.DEFAULT_MARGIN and result["max_prompt_length"] % 64 == 0
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    rows = pq.read_metadata(prepared / "test.parquet").num_rows
    assert result["test"]["rows"] == rows
    # verl keeps every row at the measured maximum, and drops exactly the longest ones just below it
    assert _verl_kept(prepared, tokenizer, longest) == rows
    counts = pl.count_prompt_tokens(tokenizer, pq.read_table(prepared / "test.parquet").column("prompt").to_pylist(),
                                    progress=False)
    below = int(np.sort(counts)[rows // 2])
    assert _verl_kept(prepared, tokenizer, below) == int((counts <= below).sum())


def test_an_overlong_limit_stops_naming_the_rows_it_would_drop(prepared, tiny_tokenizer_dir, capsys, monkeypatch):
    result = pl.measure(prepared, str(tiny_tokenizer_dir), progress=False)
    limit = result["train"]["p50"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    expected = {s: int((pl.count_prompt_tokens(tokenizer, pq.read_table(prepared / f"{s}.parquet").column("prompt")
                                                .to_pylist(), progress=False) > limit).sum()) for s in pl.SPLITS}
    assert expected["train"] > 0
    with pytest.raises(DataPrepError) as err:
        pl.main([str(prepared), "--tokenizer", str(tiny_tokenizer_dir), "--max-prompt-length", str(limit), "--no-progress"])
    message = str(err.value)
    assert f"would drop {expected['train']} of {result['train']['rows']} train rows and {expected['test']} of " in message
    assert f"set it to {result['max_prompt_length']} or more" in message
    # a limit that fits is echoed; no limit prints the measured length; a second call reuses the record
    pl.main([str(prepared), "--tokenizer", str(tiny_tokenizer_dir), "--max-prompt-length", "100000", "--no-progress"])
    monkeypatch.setattr(pl, "load_tokenizer", lambda name: pytest.fail("measured again"))
    pl.main([str(prepared), "--tokenizer", str(tiny_tokenizer_dir), "--no-progress"])
    assert capsys.readouterr().out.split() == ["100000", str(result["max_prompt_length"])]


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(DataPrepError, match="train.parquet: not found"):
        pl.measure(tmp_path, "qwen2")


@pytest.mark.network
@pytest.mark.slow  # builds an interaction-scale KuaiRec fixture and Qwen2's tokenizer (~30 s)
def test_default_settings_fit_kuairec_with_every_caption_at_the_cut(tmp_path):
    """Every KuaiRec title at the 60-character cut (the longest prompts the defaults can make), 20
    history items, 30 candidates: the packaged GPU recipe's max_prompt_length keeps every row."""
    import csv

    import tiktoken  # noqa: F401  (the reference encoding below)

    from verl_flexrec.data.__main__ import main
    from verl_flexrec.data.fixtures import write_kuairec
    from verl_flexrec.pretrained import qwen2_tiktoken_encoding
    from verl_flexrec.recipes.check import compose

    folder = write_kuairec(tmp_path / "raw", n_items=700, small_items=300, small_users=20, big_users=40,
                           big_per_user=300, big_first_item=200)
    path = folder / "kuairec_caption_category.csv"
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines(keepends=True)))
    words = ["今天和闺蜜一起去吃火锅", "#日常vlog", "😂😂", "@快手热门", "记录美好生活", "家人们谁懂啊", "❤️", "🔥", "，"]
    rng = np.random.default_rng(0)
    for row in rows[1:]:
        if len(row) == 10 and row[0].isdigit():
            row[2] = "".join(words[i] for i in rng.integers(len(words), size=20))  # > 60 characters
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    out = tmp_path / "out"
    assert main(["kuairec", "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(out), "--needs", "all",
                 "--no-progress", "--prompt-tokenizer", "qwen2"]) == 0
    result = json.loads((out / "prep_info.json").read_text())["prompt_tokens"]
    # the independent reference: tiktoken over the ChatML text
    encoding = qwen2_tiktoken_encoding()
    prompts = pq.read_table(out / "test.parquet").column("prompt").to_pylist()
    chatml = ["".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in p) + "<|im_start|>assistant\n"
              for p in prompts]
    reference = [len(encoding.encode(text, allowed_special="all")) for text in chatml]
    assert result["test"]["max"] == max(reference) and result["test"]["min"] == min(reference)
    assert max(reference) > 2500  # captions at the cut: the long case the issue measured (~2.7-3.1k)
    packaged = compose("flexrec_trainer", ["data.train_files=/a", "data.val_files=/b"]).data.max_prompt_length
    assert max(result["train"]["max"], result["test"]["max"]) + pl.DEFAULT_MARGIN <= packaged
