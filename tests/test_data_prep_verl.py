"""verl's own RLHFDataset loads what data_prep writes; the ground truth round-trips."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data import esci, kuairec, movielens  # noqa: E402
from verl_flexrec.data.io import run_main  # noqa: E402
from verl_flexrec.data.parquet import INTERACTIONS_SCHEMA, ROW_SCHEMA  # noqa: E402
from fixtures_raw import write_esci, write_kuairec, write_movielens  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer(out_dir: Path):
    """A byte-level BPE tokenizer with a ChatML template, trained on a few words (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["Rank the candidate videos movies products <think> </think> <answer>[1, 2]</answer>"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out_dir)
    return fast


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Each script run in-process on its fixture; {dataset: output folder}."""
    base = tmp_path_factory.mktemp("verl_load")
    write_movielens(base / "ml")
    write_kuairec(base / "kr")
    write_esci(base / "esci")
    needs = "maximize_interest,explore_new_topics,trend_promotion"  # not 'all': other tests register needs
    runs = {
        "ml-1m": (movielens.main, ["--raw-dir", base / "ml", "--num-candidates", "10", "--needs", needs, "--sparse-frac", "0.3"]),
        "kuairec": (kuairec.main, ["--raw-dir", base / "kr", "--test-time-frac", "0.5", "--needs", needs]),
        "esci": (esci.main, ["--raw-dir", base / "esci"]),
    }
    out = {}
    for name, (main, args) in runs.items():
        out[name] = base / f"{name}_out"
        assert run_main(main, [*map(str, args), "--out-dir", str(out[name]), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    try:
        from verl_flexrec.testing import build_tiny_tokenizer as shared
    except ImportError:
        shared = build_tiny_tokenizer
    tok = shared(tmp_path_factory.mktemp("tok"))
    if isinstance(tok, (str, Path)):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tok))
    return tok


def _dataset(files, tokenizer, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1_000_000, "filter_overlong_prompts": True,
                               "return_raw_chat": True, "cache_dir": str(tmp_path / "cache")})
    return RLHFDataset(data_files=[str(f) for f in files], tokenizer=tokenizer, config=config)


def test_every_file_has_the_shared_schema(outputs):
    for folder in outputs.values():
        for split in ("train", "test"):
            assert pq.read_schema(folder / f"{split}.parquet").remove_metadata() == ROW_SCHEMA
    for dataset in ("ml-1m", "kuairec"):  # the critic's table; ESCI has no critic
        assert pq.read_schema(outputs[dataset] / "interactions.parquet").remove_metadata() == INTERACTIONS_SCHEMA
    assert not (outputs["esci"] / "interactions.parquet").exists()


@pytest.mark.parametrize("dataset", ["ml-1m", "kuairec", "esci"])
def test_rlhf_dataset_loads_and_ground_truth_round_trips(outputs, tokenizer, tmp_path, dataset):
    folder = outputs[dataset]
    raw_rows = pq.read_table(folder / "train.parquet").to_pylist() + pq.read_table(folder / "test.parquet").to_pylist()
    ds = _dataset([folder / "train.parquet", folder / "test.parquet"], tokenizer, tmp_path)
    assert len(ds) == len(raw_rows)  # nothing filtered, nothing lost
    for i in range(len(ds)):
        item = ds[i]
        assert item["data_source"] == f"flexrec/{dataset}"
        assert item["raw_prompt"] == raw_rows[i]["prompt"]
        assert item["index"] == raw_rows[i]["extra_info"]["index"]
        gt = GroundTruth.from_any(item["reward_model"]["ground_truth"])
        assert gt.to_dict() == raw_rows[i]["reward_model"]["ground_truth"]
        assert GroundTruth.from_any(gt.to_json()) == gt
    text = tokenizer.apply_chat_template(ds[0]["raw_prompt"], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


def test_datasets_can_be_mixed_in_one_run(outputs, tokenizer, tmp_path):
    files = [outputs[d] / "test.parquet" for d in ("ml-1m", "kuairec", "esci")]
    ds = _dataset(files, tokenizer, tmp_path)
    assert {ds[i]["data_source"] for i in range(len(ds))} == {"flexrec/ml-1m", "flexrec/kuairec", "flexrec/esci"}
