"""Hand FlexRec's per-rollout inputs from the ``flexrec_sync`` trainer to the ``flexrec`` estimator.

verl 0.9's V1 ``PPOTrainer._compute_advantage`` reads a fixed set of TransferQueue fields and
calls a registered estimator with only ``token_level_rewards, response_mask, index, config``.
The FlexRec trainer (:mod:`verl_flexrec.integration.trainer`) therefore fetches each rollout's
``extra_fields["reward_extra_info"]`` itself and runs verl's own ``_compute_advantage`` inside
:func:`provide`; the estimator, called by verl in the same thread, takes the batch from
:func:`current` and records what it computed (scales, clipping) for the training metrics.

Rows are matched by position, so the estimator checks that verl handed it the same rollouts in
the same order (:meth:`FlexRecBatch.check_aligned`): same prompt uid and same number of response
tokens per row. No verl import here.
"""

from __future__ import annotations

import contextlib
import contextvars
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
    trajectory). ``real[i]`` is False for verl's synthetic padding rows, which are left out of
    every statistic. ``final_rows[i]`` is the row of the final output of row ``i``'s trajectory
    (``i`` itself for a single-output one; ``None``: every row is final): only final outputs take
    part in the statistics, an earlier output gets its session's sequence advantage, as verl's
    ``compute_advantage_for_multi_trajectories`` does for GRPO.
    """

    uids: list[str]
    infos: list[dict[str, Any] | None]
    response_lengths: list[int]
    real: list[bool]
    final_rows: list[int] | None = None
    # filled by the estimator
    consumed: bool = False
    result: Any = None  # verl_flexrec.advantage.FlexRecAdvantages of the real rows
    result_rows: list[int] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.uids)
        if not (len(self.infos) == len(self.response_lengths) == len(self.real) == n):
            raise ValueError(
                f"FlexRecBatch needs one entry per row: uids={n}, infos={len(self.infos)}, "
                f"response_lengths={len(self.response_lengths)}, real={len(self.real)}"
            )
        if self.final_rows is not None and len(self.final_rows) != n:
            raise ValueError(f"FlexRecBatch needs one final row per row: uids={n}, final_rows={len(self.final_rows)}")

    def is_final(self, i: int) -> bool:
        """Whether row ``i`` is the final output of its trajectory."""
        return self.final_rows is None or self.final_rows[i] == i

    def __len__(self) -> int:
        return len(self.uids)

    def check_aligned(self, index: Sequence[Any] | np.ndarray | None, response_mask: torch.Tensor) -> None:
        """Raise :class:`FlexRecBatchMismatch` unless ``index``/``response_mask`` describe these rows."""
        if index is None:
            raise FlexRecBatchMismatch("verl called the flexrec estimator without `index` (the prompt uids)")
        got = np.asarray(index, dtype=object).reshape(-1)
        if len(got) != len(self):
            raise FlexRecBatchMismatch(
                f"verl passed {len(got)} rollouts to the flexrec estimator, the trainer fetched {len(self)}"
            )
        lengths = response_mask.reshape(len(got), -1).sum(-1).cpu().numpy()
        uids = np.asarray(self.uids, dtype=object)
        same_uid = got == uids
        if not same_uid.all():  # uids that are not str (ints, numpy scalars): compare as text
            same_uid = got.astype(str) == uids.astype(str)
        same = same_uid & (lengths == np.asarray(self.response_lengths))
        if not same.all():
            i = int(np.argmin(same))
            raise FlexRecBatchMismatch(
                f"row {i}: verl's estimator input has uid={str(got[i])!r} with {int(lengths[i])} response tokens, the "
                f"trainer fetched uid={self.uids[i]!r} with {self.response_lengths[i]}; verl's _compute_advantage no "
                "longer keeps TransferQueue key order (tests/test_trainer_seam_on_cpu.py)"
            )


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
