"""data_prep/esci.py on generated Shopping-Queries-format parquet files, run as a user runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_raw import parquet_files, read_rows, run_either, run_in_process, run_script, write_esci  # noqa: E402
from verl_flexrec.needs import ESCI_GAINS  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402

EXAMPLES = "shopping_queries_dataset/shopping_queries_dataset_examples.parquet"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("esci_raw")
    write_esci(root)
    return root


@pytest.fixture(scope="module")
def examples(raw):
    return pq.read_table(raw / EXAMPLES).to_pandas()


@pytest.fixture(scope="module")
def out(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("esci_out")
    result = run_script("esci", "--raw-dir", raw, "--out-dir", out)
    assert result.returncode == 0, result.stderr
    return out


def test_gains_are_the_esci_label_mapping(out, examples):
    label = {(str(q), p): l for q, p, l in zip(examples["query_id"], examples["product_id"], examples["esci_label"])}
    for split in ("train", "test"):
        for row in read_rows(out / f"{split}.parquet"):
            gt = GroundTruth.from_any(row["reward_model"]["ground_truth"])
            expected = [ESCI_GAINS[label[(gt.user_id, p)]] for p in gt.item_ids]
            assert gt.gains == expected and gt.interest == expected and all(gt.observed)
            assert gt.need == "product_search" and row["data_source"] == "flexrec/esci"
            assert 10 <= gt.num_candidates <= 30 and len(set(expected)) > 1
            assert row["extra_info"]["query"] in row["prompt"][1]["content"]
            assert row["extra_info"]["history_item_ids"] == [] and row["extra_info"]["candidate_ts"] == []


def test_queries_follow_the_official_split_and_filters(out, examples):
    meta = examples.groupby("query_id").agg(split=("split", "first"), locale=("product_locale", "first"),
                                            small=("small_version", "first"), n=("product_id", "size"))
    ids = {}
    for split in ("train", "test"):
        ids[split] = {int(r["extra_info"]["user_id"]) for r in read_rows(out / f"{split}.parquet")}
        assert ids[split]
        for q in ids[split]:
            assert meta.loc[q, "split"] == split and meta.loc[q, "locale"] == "us" and meta.loc[q, "small"] == 1
            assert meta.loc[q, "n"] >= 10
    assert not ids["train"] & ids["test"]
    assert 0 not in ids["train"] | ids["test"]  # query 0: every product Exact, nothing to rank


def test_product_text_and_missing_products(out):
    text = "\n".join(r["prompt"][1]["content"] for r in read_rows(out / "train.parquet") + read_rows(out / "test.parquet"))
    assert "(brand: Brand" in text and "color: Black" in text
    assert "(no product information)" in text  # a product without a row in the products file


def test_deterministic_and_sizes(raw, out, tmp_path):
    result = run_script("esci", "--raw-dir", raw, "--out-dir", tmp_path / "a")
    assert result.returncode == 0
    for name in ("train.parquet", "test.parquet", "prep_info.json"):
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
    result = run_script("esci", "--raw-dir", raw, "--out-dir", tmp_path / "b", "--train-size", "3", "--test-size", "2",
                        "--num-candidates", "8", "--id-style", "item")
    assert result.returncode == 0, result.stderr
    train, test = read_rows(tmp_path / "b" / "train.parquet"), read_rows(tmp_path / "b" / "test.parquet")
    assert (len(train), len(test)) == (3, 2)
    for row in train + test:
        gt = row["reward_model"]["ground_truth"]
        assert len(gt["candidates"]) == 8 and gt["candidates"] == gt["item_ids"]


def _rewrite(path, column, index, value):
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[index] = value
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)), path)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.unlink(), "shopping_queries_dataset_examples.parquet: file not found"),
    (lambda p: _rewrite(p, "esci_label", 17, "X"), "examples.parquet: row 17: field 'esci_label': expected one of ['E', 'S', 'C', 'I'], got 'X'"),
    (lambda p: _rewrite(p, "query", 3, None), "examples.parquet: row 3: field 'query': expected a value (it is missing)"),
    (lambda p: pq.write_table(pq.read_table(p).drop_columns(["split"]), p), "missing column(s) ['split']"),
    (lambda p: p.write_bytes(b"not a parquet file"), "not a readable parquet file"),
])
def test_bad_input_fails_cleanly(tmp_path, edit, message):
    root = tmp_path / "raw"
    write_esci(root)
    edit(root / EXAMPLES)
    via = "subprocess" if "file not found" in message else "in-process"
    code, stderr = run_either(via, "esci", "--raw-dir", root, "--out-dir", tmp_path / "out")
    assert code == 2, stderr
    assert message in stderr and stderr.count("error:") == 1 and "Traceback" not in stderr
    assert parquet_files(tmp_path / "out") == []


def test_needs_without_esci_features_are_refused(raw, tmp_path):
    code, stderr = run_in_process("esci", "--raw-dir", raw, "--out-dir", tmp_path / "out", "--needs", "trend_promotion")
    assert code == 2
    assert "need 'trend_promotion' uses candidate feature(s) ['interest', 'popularity'], which esci does not provide" in stderr
