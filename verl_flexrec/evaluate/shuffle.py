"""Re-render a test row with its candidates in another order (the position-bias check).

Data prep renders candidates as consecutive lines ``ID <id>`` or ``ID <id> | <side info>``
(:func:`verl_flexrec.prompt.render_candidate`), in ground-truth order. :func:`shuffle_row` moves
those lines to a new order and permutes every per-candidate ground-truth field with them. With
index ids (``"1".."K"`` in prompt order, data prep's default) the ids are renumbered so the new
prompt again reads 1..K top to bottom, exactly as data prep would have rendered that order;
dataset ids (``--id-style item``) travel with their line.

The permutation of a row depends only on ``(seed, shuffle number, row key)``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from verl_flexrec.schema import GroundTruth

from .data import EvalDataError, EvalRow

__all__ = ["candidate_line_span", "row_permutation", "shuffle_row"]

_PER_CANDIDATE = ("gains", "observed", "gain_var", "item_ids", "interest", "need_weight", "categories")


def row_permutation(seed: int, shuffle: int, key: str, k: int) -> np.ndarray:
    """A uniformly random permutation of ``range(k)`` keyed by (seed, shuffle, row key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{shuffle}\x1f{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little")).permutation(k)


def _is_line_of(line: str, cid: str) -> bool:
    head = f"ID {cid}"
    return line == head or line.startswith(head + " | ")


def candidate_line_span(lines: list[str], candidates: list[str]) -> int:
    """Index of the first of the K consecutive candidate lines; -1 when not found."""
    k = len(candidates)
    for start in range(len(lines) - k + 1):
        if _is_line_of(lines[start], candidates[0]) and all(
            _is_line_of(lines[start + j], candidates[j]) for j in range(1, k)
        ):
            return start
    return -1


def _index_ids(candidates: list[str]) -> bool:
    return candidates == [str(i) for i in range(1, len(candidates) + 1)]


def shuffle_row(row: EvalRow, perm: np.ndarray) -> EvalRow:
    """``row`` with candidate ``perm[j]`` shown at position j (prompt and ground truth)."""
    truth = row.truth
    candidates = truth.candidates
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(len(candidates))):
        raise ValueError(f"perm is not a permutation of {len(candidates)} candidates")
    where = None
    for m_index in range(len(row.messages) - 1, -1, -1):
        lines = row.messages[m_index]["content"].split("\n")
        start = candidate_line_span(lines, candidates)
        if start >= 0:
            where = (m_index, lines, start)
            break
    if where is None:
        raise EvalDataError(
            f"row {row.index}: cannot shuffle candidates: the prompt has no block of lines "
            f"'ID <id> | ...' in ground-truth order (candidates {candidates[:3]}...)"
        )
    m_index, lines, start = where
    block = lines[start : start + len(candidates)]
    renumber = _index_ids(candidates)
    new_ids = [str(j + 1) for j in range(len(perm))] if renumber else [candidates[p] for p in perm]
    new_block = []
    for j, p in enumerate(perm):
        rest = block[p][len(f"ID {candidates[p]}"):]
        new_block.append(f"ID {new_ids[j]}{rest}")
    lines = lines[:start] + new_block + lines[start + len(candidates):]
    messages = [dict(m) for m in row.messages]
    messages[m_index]["content"] = "\n".join(lines)

    fields = truth.to_dict()
    fields["candidates"] = new_ids
    for name in _PER_CANDIDATE:
        values = fields[name]
        if values:
            fields[name] = [values[p] for p in perm]
    return row.with_truth(GroundTruth(**fields), messages)
