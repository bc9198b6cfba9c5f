"""Which verl-flexrec produced a value, on which node and process; SHA-256 of input files.

On a cluster every node has its own installation. verl loads plugins quietly (a failed entry
point is a DEBUG line), so a node with another verl-flexrec — or a checkout with other source
files under the same version number — would score rollouts with other code without anyone
noticing. The ``flexrec`` reward manager therefore stamps each rollout's ``reward_extra_info``
with :func:`plugin_stamp` (``flexrec_plugin``), and the trainer compares the stamp with its own
:func:`plugin_build` (``verl_flexrec.integration.workers``):

    0.1.0+3f2a9c1b0d4e@node-7:41233
    ^^^^^ ^^^^^^^^^^^^ ^^^^^^ ^^^^^
    |     |            |      process id
    |     |            host name
    |     SHA-256 (first 12 hex digits) of the package's Python sources
    verl_flexrec.__version__

The source digest covers every ``*.py`` file of the installed package (relative path and
bytes), read once per process (~100 files, a few milliseconds), so a wheel and an editable
checkout of the same commit agree and an edited file does not. No verl import here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from pathlib import Path

from . import __version__

__all__ = [
    "PLUGIN_KEY",
    "file_sha256",
    "parse_stamp",
    "plugin_build",
    "plugin_stamp",
    "process_name",
    "source_digest",
]

PLUGIN_KEY = "flexrec_plugin"  # the reward_extra_info key of the stamp
_DIGEST_CHARS = 12
_CHUNK = 1 << 20


@functools.cache
def source_digest() -> str:
    """SHA-256 of this package's Python sources (relative paths and contents, sorted)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def plugin_build() -> str:
    """``<version>+<source digest>``: equal on two nodes exactly when they run the same code."""
    return f"{__version__}+{source_digest()[:_DIGEST_CHARS]}"


def process_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def plugin_stamp() -> str:
    """``<build>@<host>:<pid>``, what each rollout's FlexRec data carries under :data:`PLUGIN_KEY`."""
    return f"{plugin_build()}@{process_name()}"


def parse_stamp(stamp: str) -> tuple[str, str]:
    """``(build, where)`` of a stamp (``where`` is ``host:pid``, or ``"?"`` when it has none)."""
    build, at, where = str(stamp).partition("@")
    return build, where if at else "?"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
