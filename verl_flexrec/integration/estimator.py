"""The ``flexrec`` advantage estimator in verl's registry, and the collation of its inputs.

verl calls estimators as ``fn(token_level_rewards, response_mask, index, config, **kwargs)``.
FlexRec's extra inputs — ``item_rewards`` (bs, K), ``item_token_pos`` (bs, L), ``seq_reward``
(bs,), ``uncertainty`` (bs,) — are built by :func:`collate_flexrec_inputs` from the reward
manager's ``reward_extra_info`` and reach the estimator one of two ways:

* inside verl's trainer: the ``flexrec_sync`` trainer fetches every rollout's
  ``reward_extra_info`` from TransferQueue and provides it through
  :mod:`verl_flexrec.integration.handoff` while verl's own ``_compute_advantage`` runs; the
  estimator checks the rows match (uid, response length) and uses ``token_level_rewards.sum(-1)``
  as the sequence reward (so verl's in-reward KL penalty, when on, is included);
* called directly, as keyword arguments.

With neither, the estimator is verl's GRPO, exactly (it calls verl's function).
"""

from __future__ import annotations

import json
import operator
from itertools import chain
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from verl.trainer.ppo import core_algos

from ..advantage import flexrec_advantages
from ..config import FlexRecConfig, config_get
from . import handoff

__all__ = ["FLEXREC_INPUT_KEYS", "collate_flexrec_inputs", "compute_flexrec_advantage"]

FLEXREC_INPUT_KEYS = ("item_rewards", "item_token_pos", "seq_reward", "uncertainty")


def compute_flexrec_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    item_rewards: torch.Tensor | None = None,
    item_token_pos: torch.Tensor | None = None,
    seq_reward: torch.Tensor | None = None,
    uncertainty: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexRec advantages (see :mod:`verl_flexrec.advantage`); returns ``(advantages, returns)``.

    Options come from ``config.flexrec`` (``algorithm.flexrec`` in the trainer config); the GRPO
    std switch from ``config.norm_adv_by_std_in_grpo``. Without any FlexRec input the result is
    ``core_algos.compute_grpo_outcome_advantage`` on the same arguments.
    """
    if index is None:
        raise ValueError("the flexrec estimator groups rollouts by prompt: verl must pass `index` (the uid)")
    cfg = FlexRecConfig.from_algorithm_config(config)
    norm_by_std = bool(config_get(config, "norm_adv_by_std_in_grpo", True))
    if cfg.advantage.norm_by_std is not None:
        norm_by_std = cfg.advantage.norm_by_std
    if item_rewards is None and item_token_pos is None and seq_reward is None and uncertainty is None:
        provided = handoff.current()
        if provided is not None:
            return _advantage_of_provided_batch(provided, token_level_rewards, response_mask, index, cfg, norm_by_std)
        return core_algos.compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards,
            response_mask=response_mask,
            index=index,
            epsilon=cfg.advantage.eps,
            norm_adv_by_std_in_grpo=norm_by_std,
        )
    if seq_reward is None:
        seq_reward = token_level_rewards.sum(-1)
    out = flexrec_advantages(
        response_mask,
        index,
        seq_reward,
        item_rewards,
        item_token_pos,
        uncertainty,
        options=cfg.advantage,
        uncertainty_options=cfg.uncertainty,
        norm_by_std=norm_by_std,
    )
    adv = out.advantages.to(token_level_rewards.dtype)
    return adv, adv


def _advantage_of_provided_batch(
    provided: handoff.FlexRecBatch,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    cfg: FlexRecConfig,
    norm_by_std: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexRec advantages of the rows the trainer provided; verl's padding rows get zeros."""
    provided.check_aligned(index, response_mask)
    rows = [i for i, real in enumerate(provided.real) if real]
    adv = torch.zeros_like(token_level_rewards)
    if rows:
        sel = torch.tensor(rows, dtype=torch.long)
        inputs = collate_flexrec_inputs([provided.infos[i] for i in rows], response_mask.shape[-1])
        out = flexrec_advantages(
            response_mask[sel],
            np.asarray(index, dtype=object).reshape(-1)[rows],
            token_level_rewards[sel].sum(-1),
            inputs["item_rewards"],
            inputs["item_token_pos"],
            inputs["uncertainty"],
            options=cfg.advantage,
            uncertainty_options=cfg.uncertainty,
            norm_by_std=norm_by_std,
        )
        adv[sel] = out.advantages.to(adv.dtype)
        provided.result, provided.result_rows = out, rows
    provided.consumed = True
    return adv, adv


# A row without FlexRec signal (verl padding, a non-final output of a multi-output trajectory):
# no items, sequence advantage only, no uncertainty.
_NO_ITEMS = {
    "flexrec_item_rewards": "[]",
    "flexrec_item_token_spans": "[]",
    "flexrec_seq_reward": float("nan"),
    "flexrec_uncertainty": 0.0,
}


def _column(infos, key: str) -> list:
    if isinstance(infos, Mapping):
        return list(infos[key])
    return [(_NO_ITEMS if info is None else info)[key] for info in infos]


def collate_flexrec_inputs(
    reward_extra_infos: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], response_length: int
) -> dict[str, torch.Tensor]:
    """Estimator keyword arguments from the reward manager's ``reward_extra_info``.

    Accepts a list of per-rollout dicts (V1 ``extra_fields``; ``None`` = a row without item
    signal) or a dict of per-key arrays (the legacy ``non_tensor_batch`` layout). Lists of
    different lengths are padded: item rewards with NaN (absent), token positions with -1 (not an
    item token). Token spans past ``response_length`` are clipped.
    """
    rewards = _json_lists(_column(reward_extra_infos, "flexrec_item_rewards"))
    span_counts, span_bounds = _span_pairs(_column(reward_extra_infos, "flexrec_item_token_spans"))
    bs = len(rewards)
    reward_counts = np.fromiter(map(len, rewards), dtype=np.int64, count=bs)
    k_max = int(reward_counts.max()) if bs else 0
    item_rewards = np.full((bs, k_max), np.nan, dtype=np.float32)
    # row-major boolean assignment fills each row's first len(r) cells, rows in order
    item_rewards[np.arange(k_max)[None, :] < reward_counts[:, None]] = np.fromiter(
        chain.from_iterable(rewards), dtype=np.float64, count=int(reward_counts.sum())
    )
    if len(span_counts) != bs:
        raise ValueError(f"reward_extra_info has {bs} rows of item rewards and {len(span_counts)} of token spans")
    item_token_pos = _token_positions(span_counts, span_bounds, response_length)
    seq = torch.tensor([float(x) for x in _column(reward_extra_infos, "flexrec_seq_reward")], dtype=torch.float32)
    u = torch.tensor([float(x) for x in _column(reward_extra_infos, "flexrec_uncertainty")], dtype=torch.float32)
    return {
        "item_rewards": torch.from_numpy(item_rewards),
        "item_token_pos": torch.from_numpy(item_token_pos),
        "seq_reward": seq,
        "uncertainty": u,
    }


def _json_lists(column: list) -> list[list]:
    """Each entry as a list: JSON strings parsed (all in one ``json.loads``), sequences listed."""
    out = [None if isinstance(x, str) else list(x) for x in column]
    strings = [i for i, x in enumerate(column) if isinstance(x, str)]
    if strings:
        # one parse of "[s0,s1,...]" instead of one call per row; each string must be one JSON list
        try:
            parsed = json.loads("[" + ",".join(column[i] for i in strings) + "]")
        except json.JSONDecodeError:
            parsed = None
        if parsed is None or len(parsed) != len(strings):  # malformed: parse row by row for its own error
            parsed = [json.loads(column[i]) for i in strings]
        for i, value in zip(strings, parsed):
            out[i] = list(value)
    return out


_POW10 = 10 ** np.arange(19, dtype=np.int64)
_BIG = 2**62


def _int_pairs_from_json_text(strings: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Pairs per row and the flat int64 values of JSON lists of int pairs, ``"[[3, 5], [6, 8]]"``,
    read from the bytes with numpy (no Python object per number). None unless every string has
    exactly that shape (ASCII, spaces allowed, integers of at most 18 digits): the caller then
    parses with ``json``, which also names what is wrong."""
    try:
        raw = ",".join(strings).encode("ascii")
    except UnicodeEncodeError:
        return None
    pairs = [t.count("[") - 1 for t in strings]
    if min(pairs) < 0:
        return None
    # what is left after deleting digits, signs and spaces must be exactly the brackets and commas
    # of lists of pairs: "[[,],[,]]" per row, "[]" for an empty one, rows joined by ","
    skeleton = b",".join(b"[" + b"[,]," * (p - 1) + b"[,]]" if p else b"[]" for p in pairs)
    if raw.translate(None, b"0123456789- ") != skeleton:
        return None
    b = np.frombuffer(raw, dtype=np.uint8)
    digit = (b >= 48) & (b <= 57)
    edge = np.diff(digit.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    lengths = ends - starts
    if len(starts) != 2 * sum(pairs) or lengths.max(initial=0) > 18:
        return None  # numbers split by spaces, or too long for int64
    minus = np.flatnonzero(b == 45)
    # a sign stands right before a number, after a bracket, comma or space
    if len(minus) and not (np.isin(minus + 1, starts).all() and not digit[minus - 1].any() and not (b[minus - 1] == 45).any()):
        return None
    values = np.zeros(len(starts), dtype=np.int64)
    if len(starts):
        place = np.repeat(ends, lengths) - np.flatnonzero(digit) - 1  # power of ten of each digit
        first_digit = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        values = np.add.reduceat((b[digit] - 48).astype(np.int64) * _POW10[place], first_digit)
    values[np.searchsorted(starts, minus + 1)] *= -1
    return np.asarray(pairs, dtype=np.int64), values


def _span_pairs(column: list) -> tuple[np.ndarray, np.ndarray]:
    """Spans per row and the flat ``[first0, end0, first1, ...]`` of a span column."""
    if column and all(isinstance(x, str) for x in column):
        fast = _int_pairs_from_json_text(column)
        if fast is not None:
            return fast
    spans = _json_lists(column)
    counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
    n = int(counts.sum())
    if n and set(map(len, chain.from_iterable(spans))) != {2}:
        bad = next(i for i, row in enumerate(spans) if any(len(p) != 2 for p in row))
        raise ValueError(f"reward_extra_info row {bad}: flexrec_item_token_spans must be [first, end) pairs, got {spans[bad]!r}")
    # integers only (a float raises TypeError, as slicing does); beyond +-2**62 a bound slices
    # like +-2**62, so clamping keeps int64 exact
    bounds = map(operator.index, chain.from_iterable(chain.from_iterable(spans)))
    return counts, np.fromiter((min(max(v, -_BIG), _BIG) for v in bounds), dtype=np.int64, count=2 * n)


def _token_positions(counts: np.ndarray, flat: np.ndarray, length: int) -> np.ndarray:
    """``(bs, length)`` int64: k on the tokens ``[first, end)`` of span k of each row, -1 elsewhere.

    ``counts[i]`` spans of row i, their bounds in ``flat`` (row-major). Same result as
    ``pos[i, max(0, first):min(end, length)] = k`` for every row i and span k in order (a later
    span wins where spans overlap; Python's slice rules for a negative end), done as one scatter.
    """
    bs = len(counts)
    pos = np.full((bs, length), -1, dtype=np.int64)
    n = int(counts.sum())
    if n == 0 or length == 0:
        return pos
    first, end = flat[0::2], flat[1::2]
    start = np.minimum(np.maximum(first, 0), length)
    stop = np.minimum(end, length)
    stop = np.where(stop < 0, np.maximum(stop + length, 0), stop)  # Python slicing of a negative end
    width = np.maximum(stop - start, 0)
    row = np.repeat(np.arange(bs, dtype=np.int64), counts)
    k = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    total = int(width.sum())
    if total == 0:
        return pos
    # flat cell index of every covered token, spans in (row, k) order
    cell = np.repeat(row * length + start - (np.cumsum(width) - width), width) + np.arange(total, dtype=np.int64)
    value = np.repeat(k, width)
    if total > 1 and not bool(np.all(cell[1:] > cell[:-1])):  # overlapping spans: keep the last write
        last = total - 1 - np.unique(cell[::-1], return_index=True)[1]
        cell, value = cell[last], value[last]
    pos.reshape(-1)[cell] = value
    return pos
