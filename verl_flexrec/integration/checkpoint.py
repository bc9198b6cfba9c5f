"""Check verl's resume point before ``resume_mode=auto`` loads it: never train silently from a broken one.

verl 0.9 writes ``global_step_N/`` (``actor/`` shards, ``data.pt``) and only then
``latest_checkpointed_iteration.txt`` = N, so a save cut off by a crash leaves the tracker on the
previous complete step: that step is resumed and the newer, partial folder is skipped (we say so).
What verl does not catch:

* the tracker names a folder that is missing: verl prints one line and **trains from scratch**;
* a shard or ``data.pt`` is truncated or empty (a full disk, a copy cut short, a file system
  that lost unsynced data): verl fails deep inside ``torch.load`` with an unzip error;
* the tracker is not a number: ``ValueError: invalid literal for int()``.

:func:`check_resume_point` raises :class:`CheckpointError` naming the file and the fix in each
case. ``torch.save`` files are zip archives whose directory sits at the end of the file, so a
truncated file fails :class:`zipfile.ZipFile` without reading the (possibly 37 GB) payload.
No verl import: only verl's file layout.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

__all__ = ["CheckpointError", "check_resume_point", "incomplete_steps"]

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
_STEP = re.compile(r"global_step_(\d+)$")
_MODEL_SHARD = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt$")


def _say(message: str) -> None:
    logger.warning(message)
    print(f"[flexrec] {message}", flush=True)  # verl's logger level hides warnings of plugin modules in Ray


class CheckpointError(RuntimeError):
    """verl's latest checkpoint cannot be resumed from (the message names the file and the fix)."""


def _fix(folder: Path) -> str:
    return (f"Resume from an earlier complete checkpoint with trainer.resume_mode=resume_path "
            f"trainer.resume_from_path={folder}/global_step_<M>, start afresh under a new RUN_NAME "
            f"(or trainer.resume_mode=disable), or repair {folder / TRACKER}")


def _check_torch_file(path: Path, folder: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        raise CheckpointError(f"{path}: missing or empty. {_fix(folder)}")
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a complete torch.save file ({e}); the save was cut short or the "
                              f"file is damaged. {_fix(folder)}") from None


def incomplete_steps(folder: str | os.PathLike, latest: int | None) -> list[int]:
    """Steps with a ``global_step_N`` folder newer than the tracker's ``latest`` (saves cut short)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    steps = [int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(s for s in steps if latest is None or s > latest)


def check_resume_point(folder: str | os.PathLike) -> Path | None:
    """The checkpoint ``resume_mode=auto`` will load from ``folder`` (``trainer.default_local_dir``),
    after checking it is complete; ``None`` when there is none (a fresh run).

    Raises :class:`CheckpointError` when the tracker is unreadable, names a missing folder, or
    the folder lacks ``actor/`` model shards or holds a truncated ``.pt`` file.
    """
    folder = Path(folder)
    tracker = folder / TRACKER
    if not tracker.exists():
        partial = incomplete_steps(folder, None)
        if partial:
            _say(f"{folder}: no {TRACKER}, so global_step_{partial} never finished saving: skipped, training "
                 "from scratch")
        return None
    text = tracker.read_text(errors="replace").strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker}: holds {text[:40]!r}, not a step number. {_fix(folder)}")
    step = int(text)
    ckpt = folder / f"global_step_{step}"
    if not ckpt.is_dir():
        raise CheckpointError(f"{tracker} names step {step} but {ckpt} does not exist (verl would train from "
                              f"scratch without a word). {_fix(folder)}")
    actor = ckpt / "actor"
    shards = sorted(p for p in actor.glob("model_world_size_*_rank_*.pt")) if actor.is_dir() else []
    if not shards:
        raise CheckpointError(f"{actor}: no model_world_size_*_rank_*.pt shard. {_fix(folder)}")
    world = {int(_MODEL_SHARD.search(p.name).group(1)) for p in shards}
    ranks = {int(_MODEL_SHARD.search(p.name).group(2)) for p in shards}
    if len(world) != 1 or ranks != set(range(next(iter(world)))):
        raise CheckpointError(f"{actor}: model shards {[p.name for p in shards]} are not one complete set of "
                              f"ranks. {_fix(folder)}")
    for path in sorted(actor.glob("*.pt")) + [ckpt / "data.pt"]:
        _check_torch_file(path, folder)
    partial = incomplete_steps(folder, step)
    if partial:
        _say(f"{folder}: global_step_{partial} never finished saving: skipped, resuming from global_step_{step}")
    return ckpt
