"""RecBole atomic files: reading ``NAME.inter``, ``NAME.item`` and ``NAME.user`` with their typed headers.

The format (RecBole's "atomic files", the exchange format of many public recommendation
datasets): UTF-8 text, tab-separated, no quoting; the first line names each field with its type,
``name:type``; one record per following line::

    user_id:token	item_id:token	rating:float	timestamp:float
    196	242	3	881250949

=============  ============================================================================
``token``      one string (an id, a word); read as written (``007`` stays ``007``)
``token_seq``  strings separated by the sequence separator (RecBole's ``seq_separator``,
               a space by default): ``class:token_seq`` ``Action Sci-Fi`` -> two categories
``float``      a number; an empty field is a missing value
``float_seq``  numbers separated by the sequence separator
=============  ============================================================================

:func:`read_atomic` checks the header (every field ``name:type`` with a known type, no name
twice) and every ``float`` / ``float_seq`` value, and returns the columns as text (``float``
ones as numbers); errors name the file, the line and the field (:class:`.io.DataPrepError`).
:func:`find_atomic` locates a dataset's files in a folder; :func:`write_atomic` writes one (to
export a log to RecBole, or to convert a dataset for ``python -m verl_flexrec.data interactions``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import Column, DataPrepError, read_csv_checked

__all__ = [
    "FIELD_TYPES",
    "AtomicFile",
    "AtomicFiles",
    "find_atomic",
    "read_atomic",
    "read_header",
    "split_seq",
    "write_atomic",
]

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SUFFIXES = (".inter", ".item", ".user")


@dataclass
class AtomicFile:
    """One atomic file as read: ``types[name]`` is the field's header type; ``frame`` holds one
    column per field, named without the type (text; ``float`` fields as float64, NaN = empty)."""

    path: Path
    types: dict[str, str]
    frame: pd.DataFrame

    def field(self, name: str, *, allowed: tuple[str, ...], role: str) -> pd.Series:
        """The column ``name``, whose header type must be one of ``allowed`` (``role`` says why)."""
        if name not in self.types:
            raise DataPrepError(f"{self.path}: line 1: no field {name!r} ({role}); the header has "
                                f"{[f'{n}:{t}' for n, t in self.types.items()]}")
        if self.types[name] not in allowed:
            raise DataPrepError(f"{self.path}: line 1: field '{name}:{self.types[name]}': {role} must be of type "
                                f"{' or '.join(allowed)}")
        return self.frame[name]

    def line_of(self, row: int) -> int:
        """The file line of data row ``row`` (line 1 is the header)."""
        return row + 2


@dataclass
class AtomicFiles:
    """Where a dataset's atomic files are: ``inter`` always, ``item`` and ``user`` if present."""

    name: str
    inter: Path
    item: Path | None
    user: Path | None


def find_atomic(folder: Path, dataset: str | None) -> AtomicFiles:
    """``folder/NAME.inter`` (+ ``.item``, ``.user``); ``dataset`` picks NAME when there are several."""
    if not folder.is_dir():
        raise DataPrepError(f"{folder}: not a folder (--recbole-dir names the folder holding NAME.inter)")
    names = sorted(p.stem for p in folder.glob("*.inter") if p.is_file())
    if dataset is None:
        if not names:
            raise DataPrepError(f"{folder}: no NAME.inter file (RecBole atomic files: NAME.inter, optionally "
                                f"NAME.item and NAME.user)")
        if len(names) > 1:
            raise DataPrepError(f"{folder}: holds several datasets ({', '.join(names)}); choose one with --dataset")
        dataset = names[0]
    inter = folder / f"{dataset}.inter"
    if not inter.is_file():
        raise DataPrepError(f"{inter}: file not found (datasets here: {', '.join(names) or 'none'})")
    item, user = (folder / f"{dataset}{s}" for s in (".item", ".user"))
    return AtomicFiles(dataset, inter, item if item.is_file() else None, user if user.is_file() else None)


def read_header(path: Path, encoding: str = "utf-8") -> dict[str, tuple[str, str]]:
    """``{name: (type, header text)}`` from the first line; a DataPrepError naming the bad field otherwise."""
    try:
        with open(path, encoding=encoding, newline="") as f:
            first = f.readline()
    except FileNotFoundError:
        raise DataPrepError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataPrepError(f"{path}: line 1: not valid {encoding} text ({e.reason})") from None
    first = first.rstrip("\r\n")
    if not first.strip():
        raise DataPrepError(f"{path}: line 1: no header (expected tab-separated fields such as user_id:token)")
    types: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(first.split("\t"), 1):
        name, colon, kind = raw.strip().rpartition(":")
        if not colon or not name:
            raise DataPrepError(f"{path}: line 1: field {number} {raw!r}: expected NAME:TYPE with TYPE one of "
                                f"{', '.join(FIELD_TYPES)} (fields are tab-separated)")
        if kind not in FIELD_TYPES:
            raise DataPrepError(f"{path}: line 1: field {number} {raw!r}: unknown type {kind!r}; expected one of "
                                f"{', '.join(FIELD_TYPES)}")
        if name in types:
            raise DataPrepError(f"{path}: line 1: field {name!r} appears twice")
        types[name] = (kind, raw)
    return types


def split_seq(text: str, sep: str) -> tuple[str, ...]:
    """The parts of a ``*_seq`` value (empty parts dropped: ``"a  b"`` -> ``("a", "b")``)."""
    return tuple(p.strip() for p in text.split(sep) if p.strip())


def _check_float_seq(path: Path, name: str, values: pd.Series, sep: str) -> None:
    for row, text in enumerate(values.tolist()):
        for part in split_seq(text, sep):
            try:
                ok = math.isfinite(float(part))
            except ValueError:
                ok = False
            if not ok:
                raise DataPrepError(f"{path}: line {row + 2}: field '{name}': expected numbers separated by "
                                    f"{sep!r} (float_seq), got {text!r}")


def read_atomic(path: Path, *, required: tuple[str, ...] = (), seq_sep: str = " ", encoding: str = "utf-8",
                progress: bool = False) -> AtomicFile:
    """Read one atomic file, checking the header and every float value (see the module docstring).

    ``required``: fields that must be in the header and never empty (the user, item and time of
    an ``.inter`` file); the caller checks their types with :meth:`AtomicFile.field`.
    """
    header = read_header(path, encoding)
    missing = [name for name in required if name not in header]
    if missing:
        raise DataPrepError(f"{path}: line 1: no field {missing[0]!r}; the header has "
                            f"{[raw.strip() for _, raw in header.values()]} (choose fields with --user-col, "
                            f"--item-col, --time-col)")
    columns = [Column(raw, "float" if kind == "float" else "str", missing="error" if name in required else "fill",
                      fill=np.nan if kind == "float" else "")
               for name, (kind, raw) in header.items()]
    frame, _ = read_csv_checked(path, columns, sep="\t", encoding=encoding, quoting=csv.QUOTE_NONE,
                                text_columns=True, progress=progress)
    frame.columns = list(header)
    for name, (kind, _) in header.items():
        if kind == "float_seq":
            _check_float_seq(path, name, frame[name], seq_sep)
    return AtomicFile(path, {name: kind for name, (kind, _) in header.items()}, frame)


def write_atomic(path: Path, fields: dict[str, tuple[str, object]], *, seq_sep: str = " ") -> Path:
    """Write one atomic file atomically: ``fields`` maps a name to ``(type, values)``, one value per
    record (``*_seq`` types: a sequence per record). The inverse of :func:`read_atomic`, for
    exporting a log to RecBole (and for the tests' fixtures)."""
    from ..atomic import atomic_path

    for name, (kind, _) in fields.items():
        if kind not in FIELD_TYPES:
            raise ValueError(f"field {name!r}: unknown type {kind!r}; expected one of {', '.join(FIELD_TYPES)}")
    columns = []
    for name, (kind, values) in fields.items():
        if kind.endswith("_seq"):
            text = [seq_sep.join(_atom(v, kind, name, seq_sep) for v in seq) for seq in values]
        else:
            text = [_atom(v, kind, name) for v in values]
        columns.append(text)
    if len({len(c) for c in columns}) > 1:
        raise ValueError(f"{path}: fields have different lengths {[len(c) for c in columns]}")
    lines = ["\t".join(f"{name}:{kind}" for name, (kind, _) in fields.items())]
    lines += ["\t".join(row) for row in zip(*columns)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _atom(value: object, kind: str, name: str, seq_sep: str | None = None) -> str:
    if kind.startswith("float"):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    text = "" if value is None else str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        raise ValueError(f"field {name!r}: value {text!r} holds a tab or a line break")
    if seq_sep is not None and (seq_sep in text or not text):
        raise ValueError(f"field {name!r}: sequence element {text!r} is empty or holds the separator {seq_sep!r}")
    return text
