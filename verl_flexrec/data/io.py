"""Errors, messages and validated reading of raw files.

Bad input or settings raise :class:`DataPrepError`, whose message names the file, the line/row
and the field; :func:`run_main` turns it into one line on stderr and exit code 2 (and the writers
in :mod:`.parquet` leave nothing half-written).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

__all__ = [
    "Column",
    "DataPrepError",
    "ReadReport",
    "check_columns",
    "find_file",
    "log",
    "read_csv_checked",
    "read_parquet_checked",
    "report_drops",
    "run_main",
]


class DataPrepError(Exception):
    """Bad input or settings; the message names the file, the line/row and the field."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a script's main; turn a DataPrepError into one line on stderr and exit code 2."""
    try:
        main(argv)
    except DataPrepError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: nothing was written")
        return 130
    return 0


def find_file(raw_dir: Path, candidates: Sequence[str], *, what: str, required: bool = True) -> Path | None:
    """First of ``raw_dir/c`` that exists; else a DataPrepError listing where we looked."""
    for rel in candidates:
        path = raw_dir / rel
        if path.is_file():
            return path
    if not required:
        return None
    looked = ", ".join(str(raw_dir / c) for c in candidates)
    raise DataPrepError(f"{what}: file not found; looked for {looked}")


@dataclass(frozen=True)
class Column:
    """A column to read: its kind ('int', 'float', 'str') and what to do with empty values.

    ``missing``: 'error' (default), 'drop' (drop the row, counted and reported) or 'fill'.
    ``low``/``high``: allowed range of a numeric value (inclusive).
    """

    name: str
    kind: str
    missing: str = "error"
    fill: object = None
    low: float | None = None
    high: float | None = None


@dataclass
class ReadReport:
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def _bad_text_line(path: Path, encoding: str) -> int | None:
    """Line number of the first line that does not decode (for the error message)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return None


def _parser_error(path: Path, err: Exception) -> DataPrepError:
    text = str(err)
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return DataPrepError(f"{path}: line {m.group(2)}: expected {m.group(1)} fields, saw {m.group(3)}")
    return DataPrepError(f"{path}: cannot parse: {text.strip()}")


def _shown(value: object) -> str:
    """A raw value for an error message: strings quoted, numbers plain."""
    if hasattr(value, "item"):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _check_chunk(chunk: pd.DataFrame, columns: Sequence[Column], path: Path, first_line: int,
                 report: ReadReport) -> pd.DataFrame:
    """Validate and convert one chunk; ``first_line`` is the file line of the chunk's first row."""
    keep = np.ones(len(chunk), dtype=bool)
    out = {}
    for col in columns:
        raw = chunk[col.name]
        missing = raw.isna().to_numpy()
        if col.kind == "str":
            fill = col.fill if col.missing == "fill" else ""
            values = np.array([fill if m else str(v) for v, m in zip(raw.tolist(), missing)], dtype=object)
        else:
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~missing & ~np.isfinite(values)
            if col.kind == "int":
                bad |= ~missing & np.isfinite(values) & (values != np.floor(values))
            if bad.any():
                i = int(np.argmax(bad))
                expected = "an integer" if col.kind == "int" else "a finite number"
                raise DataPrepError(
                    f"{path}: line {first_line + i}: field '{col.name}': expected {expected}, got {_shown(raw.iloc[i])}"
                )
            with np.errstate(invalid="ignore"):
                out_of_range = ~missing & (((values < col.low) if col.low is not None else False)
                                           | ((values > col.high) if col.high is not None else False))
            if np.any(out_of_range):
                i = int(np.argmax(out_of_range))
                raise DataPrepError(
                    f"{path}: line {first_line + i}: field '{col.name}': expected a value in "
                    f"[{col.low if col.low is not None else '-inf'}, {col.high if col.high is not None else 'inf'}], "
                    f"got {_shown(raw.iloc[i])}"
                )
            values = np.where(missing, col.fill if col.missing == "fill" else 0, values)
            if col.kind == "int":
                values = values.astype(np.int64)
        if missing.any():
            if col.missing == "error":
                i = int(np.argmax(missing))
                raise DataPrepError(f"{path}: line {first_line + i}: field '{col.name}': value is missing")
            if col.missing == "drop":
                report.dropped[col.name] = report.dropped.get(col.name, 0) + int((missing & keep).sum())
                keep &= ~missing
        out[col.name] = values
    frame = pd.DataFrame(out)
    if not keep.all():
        frame = frame[keep]
    report.rows += len(frame)
    return frame


def read_csv_checked(
    path: Path,
    columns: Sequence[Column],
    *,
    sep: str = ",",
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    chunksize: int = 1_000_000,
    progress: bool = False,
    text_transform: Callable[[str], str] | None = None,
    quoting: int | None = None,
    text_columns: bool = False,
) -> tuple[pd.DataFrame, ReadReport]:
    """Read the given columns of a CSV, streaming in chunks, validating every value.

    ``names`` means the file has no header row (MovieLens). ``text_transform`` rewrites the
    decoded text first (MovieLens: ``::`` -> one separator character, so pandas' fast C parser
    can read it; line numbers are unchanged). ``quoting``: a :mod:`csv` constant (default: none for
    header-less files, minimal otherwise). ``text_columns``: read the 'str' columns as text as
    written (ids such as ``007`` keep their zeros) instead of through pandas' type guessing.
    """
    if not path.is_file():
        raise DataPrepError(f"{path}: file not found")
    report = ReadReport()
    frames = []
    try:
        if names is None:
            found = list(pd.read_csv(path, nrows=0, sep=sep, encoding=encoding).columns)
            check_columns(path, found, [c.name for c in columns])
            source: object = path
        else:
            source = io.StringIO(text_transform(path.read_text(encoding=encoding))) if text_transform else path
        # Every column is parsed (no usecols): only then does pandas reject a line with too many
        # fields. It costs little (~0.35 s per million KuaiRec rows) and memory stays per chunk.
        reader = pd.read_csv(
            source, sep=sep, header=None if names is not None else "infer", names=names,
            encoding=encoding, chunksize=chunksize,
            quoting=quoting if quoting is not None else csv.QUOTE_NONE if names is not None else csv.QUOTE_MINIMAL,
            dtype={c.name: str for c in columns if c.kind == "str"} if text_columns else None,
            keep_default_na=False, na_values=[""], skip_blank_lines=False,  # keeps line numbers exact
        )
        line = first_data_line = 1 if names is not None else 2
        bar = tqdm(desc=f"reading {path.name}", unit=" rows", unit_scale=True, disable=not progress, leave=False)
        with bar:
            for chunk in reader:
                frames.append(_check_chunk(chunk, columns, path, line, report))
                line += len(chunk)
                bar.update(len(chunk))
    except UnicodeDecodeError as e:
        bad = _bad_text_line(path, encoding)
        where = f"line {bad}: " if bad else ""
        raise DataPrepError(f"{path}: {where}not valid {encoding} text ({e.reason})") from None
    except pd.errors.EmptyDataError:
        raise DataPrepError(f"{path}: file is empty") from None
    except DataPrepError:
        raise
    except ValueError as e:  # pandas ParserError: a line with too many fields, a broken quote
        raise _parser_error(path, e) from None
    if line == first_data_line:
        raise DataPrepError(f"{path}: file has no data rows")
    return pd.concat(frames, ignore_index=True), report


def check_columns(path: Path, found: Iterable[str], wanted: Iterable[str]) -> None:
    found = list(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataPrepError(f"{path}: missing column(s) {missing}; found {found}")


def report_drops(path: Path, report: ReadReport, why: str) -> None:
    for column, n in report.dropped.items():
        if n:
            log(f"note: {path.name}: dropped {n:,} rows with an empty '{column}' ({why})")


def read_parquet_checked(path: Path, columns: list[Column]) -> pd.DataFrame:
    """The given columns of a parquet file, validated like the text files (errors name the row)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataPrepError(f"{path}: cannot read as parquet ({e})") from None
    check_columns(path, table.column_names, [c.name for c in columns])
    if table.num_rows == 0:
        raise DataPrepError(f"{path}: file has no data rows")
    table = table.select([c.name for c in columns])
    for i, f in enumerate(table.schema):  # dates and times -> Unix seconds, the unit every reader uses
        if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type):
            seconds = pc.divide(pc.cast(pc.cast(table.column(i), pa.timestamp("us", tz="UTC")), pa.int64()), 1e6)
            table = table.set_column(i, f.name, seconds)
    frame = table.to_pandas()
    try:
        return _check_chunk(frame, columns, path, 1, ReadReport())
    except DataPrepError as e:  # the validator counts text lines; a parquet file has rows
        raise DataPrepError(str(e).replace(f"{path}: line ", f"{path}: row ", 1)) from None
