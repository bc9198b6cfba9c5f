"""Paths written into results files: relative to the folder the file lives in, never absolute.

A results file is read on other machines (committed, attached to a report), where the absolute
paths of the machine that made it mean nothing and leak its layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["portable_path", "portable_paths_in"]


def portable_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to the folder ``base`` (POSIX separators; ``..`` where it lies outside).

    Lexical, like ``os.path.relpath``: symbolic links are kept, not followed (a virtualenv's
    ``python`` must stay the virtualenv's).
    """
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def portable_paths_in(obj: Any, base: str | os.PathLike, paths: Iterable[str | os.PathLike | None]) -> Any:
    """A copy of JSON-like ``obj`` in whose strings each of ``paths`` is :func:`portable_path`'d.

    A path is replaced where it stands as a whole token (as given, and in its absolute form), so
    ``out`` in ``--out-dir out`` is rewritten but not the ``out`` in ``without``.
    """
    table = {}
    for p in paths:
        if p is None:
            continue
        relative = portable_path(p, base)
        for form in {str(p), os.path.abspath(p)}:
            table[form] = relative
    if not table:
        return obj
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, sorted(table, key=len, reverse=True)))
                         + r")(?![\w./-])")

    def convert(x):
        if isinstance(x, str):
            return pattern.sub(lambda m: table[m.group(1)], x)
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [convert(v) for v in x]
        return x

    return convert(obj)
