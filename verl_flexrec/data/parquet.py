"""The parquet schemas and the writer of a run's outputs (all files appear together or none)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import AtomicFiles
from ..schema import GroundTruth
from .io import DataPrepError

__all__ = ["INTERACTIONS_SCHEMA", "ROW_SCHEMA", "write_outputs", "write_rows"]


_GT_TYPES = {
    "list[str]": pa.list_(pa.string()),
    "list[float]": pa.list_(pa.float64()),
    "list[bool]": pa.list_(pa.bool_()),
    "str": pa.string(),
}


def _ground_truth_type() -> pa.DataType:
    """Struct of the GroundTruth fields, derived from the dataclass so the two cannot drift."""
    fields = []
    for f in dataclasses.fields(GroundTruth):
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if type_name not in _GT_TYPES:
            raise TypeError(f"GroundTruth.{f.name}: no parquet type for {type_name!r}; extend _GT_TYPES")
        fields.append((f.name, _GT_TYPES[type_name]))
    return pa.struct(fields)


# the row layout: see verl_flexrec.data.rows
ROW_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", _ground_truth_type())])),
    ("extra_info", pa.struct([
        ("split", pa.string()), ("index", pa.int64()), ("dataset", pa.string()), ("need", pa.string()),
        ("user_id", pa.string()), ("query", pa.string()), ("cutoff_ts", pa.float64()),
        ("history_item_ids", pa.list_(pa.string())), ("history_ts", pa.list_(pa.float64())),
        ("candidate_ts", pa.list_(pa.float64())), ("sparse", pa.bool_()), ("observed_frac", pa.float64()),
        ("id_style", pa.string()), ("seed", pa.int64()),
    ])),
])
# interactions.parquet: see verl_flexrec.data.interactions
INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("interest", pa.float64()), ("observed", pa.bool_()),
    ("categories", pa.string()), ("timestamp", pa.float64()),
])


def write_rows(path: Path, rows: Iterable[dict], *, batch_size: int = 512) -> int:
    """Stream rows into one parquet file with :data:`ROW_SCHEMA`; returns the row count."""
    n = 0
    with pq.ParquetWriter(path, ROW_SCHEMA, compression="snappy") as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
            n += len(batch)
    return n


def write_outputs(out_dir: Path, train_rows: Iterable[dict], test_rows: Iterable[dict], info: dict, *,
                  interactions: pa.Table | None = None) -> dict:
    """Write train.parquet, test.parquet, interactions.parquet (if given) and prep_info.json
    atomically; return the counts (``rows`` of prep_info.json)."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataPrepError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    with AtomicFiles(out_dir) as out:
        n_train = write_rows(out.path("train.parquet"), train_rows)
        n_test = write_rows(out.path("test.parquet"), test_rows)
        rows = {"train": n_train, "test": n_test}
        if interactions is not None:
            pq.write_table(interactions.cast(INTERACTIONS_SCHEMA), out.path("interactions.parquet"),
                           compression="snappy", row_group_size=1 << 20)
            rows["interactions"] = interactions.num_rows
        info = {**info, "rows": rows}
        out.path("prep_info.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return info["rows"]
