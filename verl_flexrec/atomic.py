"""Atomic file output: a file (or folder) appears complete or not at all.

Every writer in the package goes through here. The bytes go to a temporary name in the same
folder (so the final ``os.replace`` is a rename on one file system, atomic on POSIX and Windows);
on success the temporary takes the final name, on any exception it is removed and an existing
file keeps its old content.

    with atomic_path(out / "train.parquet") as tmp:   # any writer that takes a path
        pq.write_table(table, tmp)
    write_text_atomic(out / "metrics.json", text)
    with AtomicFiles(out) as files:                    # several files that appear together
        write_rows(files.path("train.parquet"), ...)
        write_rows(files.path("test.parquet"), ...)
    with atomic_dir(workdir / "critic", workdir / ".tmp-critic") as tmp:  # a whole folder
        ...

The temporary keeps the final suffix (``.results.tmp-123.png``) for writers that pick the
format from it (matplotlib).
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["AtomicFiles", "atomic_dir", "atomic_path", "temp_name", "write_text_atomic"]


def temp_name(path: str | Path) -> Path:
    """The temporary sibling of ``path``: hidden, per process, same suffix."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` when the block succeeds, else delete it.

    The parent folder must exist (callers decide how to report a folder they cannot create).
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


class AtomicFiles:
    """Several files in one folder that appear together: each is written under a temporary name,
    and all are renamed only when the whole block succeeded (on an exception none is).

    The folder is created on entry (an ``OSError`` propagates).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._stack = ExitStack()

    def __enter__(self) -> "AtomicFiles":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stack.__enter__()
        return self

    def path(self, name: str) -> Path:
        """The temporary path to write ``folder/name`` to."""
        return self._stack.enter_context(atomic_path(self.folder / name))

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._stack.__exit__(exc_type, exc, tb)


@contextmanager
def atomic_dir(final: str | Path, tmp: str | Path | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; it replaces ``final`` when the block succeeds.

    ``tmp`` (default: :func:`temp_name` of ``final``) is cleared first, so a fixed name lets an
    interrupted run's leftovers be found and removed. A failed or interrupted block removes it.
    Replacing an existing ``final`` is two steps (remove, rename): a crash between them leaves
    no ``final``, never a half-written one.
    """
    final = Path(final)
    tmp = Path(tmp) if tmp is not None else temp_name(final)
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
