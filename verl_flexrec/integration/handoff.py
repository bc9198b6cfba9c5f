"""Hand FlexRec's per-rollout inputs from the ``flexrec_sync`` trainer to the ``flexrec`` estimator.

verl 0.9's V1 ``PPOTrainer._compute_advantage`` reads a fixed set of TransferQueue fields and
calls a registered estimator with only ``token_level_rewards, response_mask, index, config``.
The FlexRec trainer (:mod:`verl_flexrec.integration.trainer`) therefore fetches each rollout's
``extra_fields["reward_extra_info"]`` itself and runs verl's own ``_compute_advantage`` inside
:func:`provide`; the estimator, called by verl in the same thread, takes the batch from
:func:`current` and records what it computed (scales, clipping) for the training metrics.

Rows are matched by position, so the estimator checks that verl handed it the same rollouts in
the same order (:meth:`FlexRecBatch.check_aligned`): the same prompt uid per row, and a
``response_mask`` that marks no token past the row's own response. The alignment key is the
response's length as TransferQueue stored it (the ``response_len`` tag of each rollout), not
the number of ones in the mask: verl's rollout correction (``algorithm.rollout_correction``,
``rollout_rs``) runs before the estimator and zeroes rejected tokens, or whole rejected
sequences, in ``response_mask`` (``rollout_corr_helper.compute_rollout_rejection_mask`` returns
``response_mask * keep``). It only ever removes tokens, so a mask reaching past its row's
response can only be another rollout's. No verl import here.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["FlexRecBatch", "FlexRecBatchMismatch", "current", "provide"]


class FlexRecBatchMismatch(RuntimeError):
    """verl called the estimator with rows that are not the ones the trainer fetched."""


@dataclass
class FlexRecBatch:
    """One ``_compute_advantage`` call's FlexRec inputs, row ``i`` = the ``i``-th TransferQueue key.

    ``infos[i]`` is the reward manager's ``reward_extra_info`` of row ``i``, or ``None`` for rows
    that carry no item signal (verl's batch padding, non-final outputs of a multi-output
    trajectory). ``response_lengths[i]`` is the number of response tokens TransferQueue holds for
    row ``i`` (verl's ``response_len`` tag; rollout correction may zero some of them in
    ``response_mask``). ``real[i]`` is False for verl's synthetic padding rows, which are left out
    of every statistic. ``final_rows[i]`` is the row holding the final output of row ``i``'s
    session (``i`` itself for a final output; ``None``: every row is final): as in verl's GRPO
    (``compute_advantage_for_multi_trajectories``) only final outputs enter the group statistics,
    and the other outputs of a session take its final output's sequence advantage.
    """

    uids: list[str]
    infos: list[dict[str, Any] | None]
    response_lengths: list[int]
    real: list[bool]
    final_rows: list[int] | None = None
    # (algorithm config, FlexRecConfig, norm_by_std): the trainer's reading of the config object it
    # hands verl, made once per run (verl does not change it while training); the estimator uses
    # it when verl passes that same object, and reads the config itself otherwise
    options: tuple[Any, Any, bool] | None = None
    # filled by the estimator
    consumed: bool = False
    result: Any = None  # verl_flexrec.advantage.FlexRecAdvantages of the real rows
    result_rows: list[int] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.uids)
        finals = n if self.final_rows is None else len(self.final_rows)
        if not (len(self.infos) == len(self.response_lengths) == len(self.real) == finals == n):
            raise ValueError(
                f"FlexRecBatch needs one entry per row: uids={n}, infos={len(self.infos)}, "
                f"response_lengths={len(self.response_lengths)}, real={len(self.real)}, final_rows={finals}"
            )

    def __len__(self) -> int:
        return len(self.uids)

    @functools.cached_property
    def response_length_array(self) -> np.ndarray:
        """``response_lengths`` as int64 numpy, made once (``np.array`` of a list: ~7x faster than torch's)."""
        return np.array(self.response_lengths, dtype=np.int64).reshape(len(self.response_lengths))

    def check_aligned(self, index: Sequence[Any] | np.ndarray | None, response_mask: torch.Tensor) -> None:
        """Raise :class:`FlexRecBatchMismatch` unless ``index``/``response_mask`` describe these rows.

        Each row must have the fetched uid, and its mask may mark only tokens of its own response
        (fewer than fetched is fine: rollout correction rejects tokens)."""
        if index is None:
            raise FlexRecBatchMismatch("verl called the flexrec estimator without `index` (the prompt uids)")
        got = np.asarray(index, dtype=object).reshape(-1)
        if len(got) != len(self):
            raise FlexRecBatchMismatch(
                f"verl passed {len(got)} rollouts to the flexrec estimator, the trainer fetched {len(self)}"
            )
        order = "verl's _compute_advantage no longer keeps TransferQueue key order (tests/test_trainer_seam_on_cpu.py)"
        if got.tolist() != list(self.uids):  # else every uid equal, in order (one list comparison)
            uids = np.asarray(self.uids, dtype=object)
            same_uid = got == uids
            if not same_uid.all():  # uids that are not str (ints, numpy scalars): compare as text
                same_uid = got.astype(str) == uids.astype(str)
            if not same_uid.all():
                i = int(np.argmin(same_uid))
                raise FlexRecBatchMismatch(
                    f"row {i}: verl's estimator input has uid={str(got[i])!r}, the trainer fetched uid={self.uids[i]!r}; {order}"
                )
        mask = response_mask.reshape(len(got), -1)
        lengths = torch.from_numpy(self.response_length_array)
        rows = rows_not_exactly_their_response(mask, lengths)  # only these can mark a token past it
        if not rows.numel():
            return
        sub = mask.index_select(0, rows)
        past = (sub != 0) & (torch.arange(mask.shape[1])[None, :] >= lengths.index_select(0, rows)[:, None])
        if bool(past.any()):
            j = int(past.any(1).to(torch.int8).argmax())
            i, t = int(rows[j]), int(past[j].to(torch.int8).argmax())
            raise FlexRecBatchMismatch(
                f"row {i} (uid={self.uids[i]!r}): verl's response_mask marks token {t}, but the trainer fetched "
                f"{self.response_lengths[i]} response tokens for this row, so it holds another rollout's mask (verl's "
                f"rollout correction only removes tokens); {order}"
            )


def rows_not_exactly_their_response(mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rows of a 0/1 ``(bs, L)`` mask that do not mark exactly the tokens ``[0, length)``.

    A 0/1 row marks exactly those when it marks ``n = length`` tokens whose indices sum to
    ``n (n - 1) / 2``, the smallest sum of ``n`` distinct indices. Two reductions (a sum and a
    matrix-vector product) instead of comparing all bs x L tokens, which cost the trainer path
    more than verl's whole ``grpo_vectorized`` (benchmarks/bench_cost.py); only the rows found here
    (all of them under token-level rollout correction) need the token-by-token check. Integer sums
    below 2**24 are exact in float32.
    """
    length = mask.shape[-1]
    dtype = torch.float32 if length * (length - 1) // 2 < 2**24 else torch.float64
    m = mask if mask.dtype == dtype else mask.to(dtype)
    count, index_sum = m.sum(1).numpy(), torch.mv(m, torch.arange(length, dtype=dtype)).numpy()
    n = lengths.numpy().astype(count.dtype)  # the (bs,) comparisons in numpy: a torch op each costs more
    return torch.from_numpy(np.flatnonzero((count != n) | (index_sum != n * (n - 1) / 2)))


_ACTIVE: contextvars.ContextVar[FlexRecBatch | None] = contextvars.ContextVar("flexrec_batch", default=None)


@contextlib.contextmanager
def provide(batch: FlexRecBatch) -> Iterator[FlexRecBatch]:
    """Make ``batch`` visible to the ``flexrec`` estimator for the duration of the block."""
    token = _ACTIVE.set(batch)
    try:
        yield batch
    finally:
        _ACTIVE.reset(token)


def current() -> FlexRecBatch | None:
    """The batch provided by the running FlexRec trainer step, or None outside one."""
    return _ACTIVE.get()
