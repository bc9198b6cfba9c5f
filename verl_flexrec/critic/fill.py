"""Writing filled gains and variances into FlexRec ground truths (one record, or a whole parquet).

For every unobserved candidate ``j`` with predicted base mean ``mu_j`` and variance ``s2_j``::

    gains[j]    = need_weight[j] * max(mu_j, 0)       (gains are >= 0 by the schema)
    gain_var[j] = need_weight[j] ** 2 * s2_j

Observed candidates keep their gains (and their ``gain_var`` entries, 0 when there were none).
Exact because every need's gain is ``base * weight`` (:mod:`verl_flexrec.needs`).

A *filler* is anything with ``predict(user_ids, item_ids, need=None, categories=None) -> (mean,
var)``: :class:`~verl_flexrec.critic.predictor.CriticPredictor` or the KNN baselines of
:mod:`verl_flexrec.critic.knn`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ..atomic import atomic_path
from ..needs import get_need
from ..schema import GroundTruth
from .data import CriticDataError, check_critic_fields, parse_ground_truth

__all__ = ["Filler", "fill_ground_truth", "fill_parquet", "is_filled", "need_weights"]


class Filler(Protocol):
    def predict(
        self, user_ids: Any, item_ids: Sequence[str], need: Any = None, categories: Any = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def need_weights(gt: GroundTruth) -> np.ndarray:
    """The record's need weights; an empty list is all ones only for a need without weights."""
    if gt.need_weight:
        w = np.asarray(gt.need_weight, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if len(bad):
            raise ValueError(f"ground_truth.need_weight[{bad[0]}] = {w[bad[0]]!r}: must be finite and >= 0")
        return w
    try:
        weighted = bool(get_need(gt.need).weights)
    except KeyError:
        weighted = True
    if weighted:
        raise ValueError(
            f"ground_truth.need_weight is empty and need {gt.need!r} is not weight-free: cannot map the critic's "
            "base prediction to a gain"
        )
    return np.ones(gt.num_candidates, dtype=np.float64)


def is_filled(gt: GroundTruth | Any) -> bool:
    """True when no unobserved candidate still waits for a fill.

    A candidate waits when it is unobserved, its need weight is > 0 and its ``gain_var`` is 0 or
    missing: a filler never returns a zero variance (the critic's floor is ``min_var``), while a
    weight-0 candidate has gain 0 and variance 0 whatever the filler says. Lets a reward manager
    fill live only the rows that the offline ``fill`` did not.
    """
    gt = GroundTruth.from_any(gt)
    unobs = ~np.asarray(gt.observed, dtype=bool)
    if not unobs.any():
        return True
    w = np.asarray(gt.need_weight, dtype=np.float64) if gt.need_weight else np.ones(gt.num_candidates)
    waiting = unobs & (w > 0) & (gt.var_array() <= 0)
    return not waiting.any()


def _apply(gt: GroundTruth, weights: np.ndarray, unobs: np.ndarray, mean: np.ndarray, var: np.ndarray) -> dict:
    """New ``gains`` and ``gain_var`` lists for ``gt``."""
    gains = gt.gains_array().copy()
    gvar = gt.var_array().copy()
    w = weights[unobs]
    gains[unobs] = w * np.maximum(mean, 0.0)
    gvar[unobs] = w * w * np.maximum(var, 0.0)
    return {"gains": gains.tolist(), "gain_var": gvar.tolist()}


def fill_ground_truth(gt: GroundTruth | Any, filler: Filler) -> GroundTruth:
    """A copy of one ground truth with every unobserved candidate filled by ``filler``."""
    gt = GroundTruth.from_any(gt)
    unobs = np.flatnonzero(~np.asarray(gt.observed, dtype=bool))
    if not len(unobs):
        return GroundTruth(**{**gt.to_dict(), "gain_var": gt.var_array().tolist()})
    if not gt.item_ids:
        raise ValueError("ground_truth.item_ids is empty (the critic needs the candidates' dataset item ids)")
    weights = need_weights(gt)
    cats = [gt.categories[j] for j in unobs] if gt.categories else None
    mean, var = filler.predict(gt.user_id, [gt.item_ids[j] for j in unobs], need=gt.need, categories=cats)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(var).all()):
        raise ValueError(f"filler {type(filler).__name__} returned non-finite predictions for user {gt.user_id!r}")
    return GroundTruth(**{**gt.to_dict(), **_apply(gt, weights, unobs, mean, var)})


def _struct_type_has(rm_type, fields_needed: Sequence[str]) -> bool:
    import pyarrow as pa

    if not pa.types.is_struct(rm_type):
        return False
    idx = rm_type.get_field_index("ground_truth")
    if idx < 0:
        return False
    gt_type = rm_type.field(idx).type
    return pa.types.is_struct(gt_type) and all(gt_type.get_field_index(f) >= 0 for f in fields_needed)


def fill_parquet(
    in_path: str | Path,
    out_path: str | Path,
    filler: Filler,
    *,
    batch_size: int = 262144,
) -> dict:
    """Fill every row of ``in_path`` and write ``out_path`` atomically; returns summary stats.

    Every other column and field is kept as it was. The whole input is validated before anything
    is written; an error names the file, the row and the field.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import read_reward_column

    in_path, out_path = Path(in_path), Path(out_path)
    table, values = read_reward_column(in_path, full_table=True)
    gts, weights, unobs = [], [], []
    for row, value in enumerate(values):
        gt = parse_ground_truth(value, in_path, row)
        u = np.flatnonzero(~np.asarray(gt.observed, dtype=bool))
        if len(u):
            check_critic_fields(gt, in_path, row, need_interest=False)
            try:
                weights.append(need_weights(gt))
            except ValueError as e:
                raise CriticDataError(f"{in_path}: row {row}: reward_model.{e}") from None
        else:
            weights.append(None)
        gts.append(gt)
        unobs.append(u)

    # one batched prediction for the whole file
    users, items, needs, cats = [], [], [], []
    have_cats = all(gt.categories for gt, u in zip(gts, unobs) if len(u))
    for gt, u in zip(gts, unobs):
        users.extend([gt.user_id] * len(u))
        items.extend(gt.item_ids[j] for j in u)
        needs.extend([gt.need] * len(u))
        if have_cats:
            cats.extend(gt.categories[j] for j in u)
    n_fill = len(items)
    mean = np.zeros(n_fill)
    var = np.zeros(n_fill)
    for s in range(0, n_fill, batch_size):
        sl = slice(s, s + batch_size)
        m, v = filler.predict(users[sl], items[sl], need=needs[sl], categories=cats[sl] if have_cats else None)
        mean[sl], var[sl] = m, v
    if not (np.isfinite(mean).all() and np.isfinite(var).all()):
        bad = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))[0])
        raise RuntimeError(
            f"filler {type(filler).__name__} returned a non-finite prediction for {users[bad]!r}/{items[bad]!r}"
        )

    rm_col = table.column("reward_model")
    rm_values = rm_col.to_pylist()
    pos = 0
    filled_gain, filled_var = [], []
    for row, (gt, u) in enumerate(zip(gts, unobs)):
        if not len(u):
            upd = {"gain_var": gt.var_array().tolist()}
        else:
            sl = slice(pos, pos + len(u))
            pos += len(u)
            upd = _apply(gt, weights[row], u, mean[sl], var[sl])
            filled_gain.extend(np.asarray(upd["gains"])[u])
            filled_var.extend(np.asarray(upd["gain_var"])[u])
        rm = rm_values[row]
        as_json = isinstance(rm, str)
        rm = json.loads(rm) if as_json else dict(rm)
        raw_gt = rm["ground_truth"]
        if isinstance(raw_gt, (str, bytes)):
            d = json.loads(raw_gt)
            d.update(upd)
            rm["ground_truth"] = json.dumps(d, separators=(",", ":"))
        else:
            d = dict(raw_gt)
            d.update(upd)
            rm["ground_truth"] = d
        rm_values[row] = json.dumps(rm, separators=(",", ":")) if as_json else rm

    if _struct_type_has(rm_col.type, ("gains", "gain_var")) or pa.types.is_string(rm_col.type):
        new_col = pa.array(rm_values, type=rm_col.type)
    else:
        new_col = pa.array(rm_values)
    out_table = table.set_column(table.schema.get_field_index("reward_model"), "reward_model", new_col)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        pq.write_table(out_table, tmp)
    n_cand = sum(gt.num_candidates for gt in gts)
    return {
        "input": str(in_path),
        "output": str(out_path),
        "filler": type(filler).__name__,
        "rows": len(gts),
        "candidates": n_cand,
        "filled": n_fill,
        "observed": n_cand - n_fill,
        "filled_gain_mean": float(np.mean(filled_gain)) if filled_gain else 0.0,
        "filled_var_mean": float(np.mean(filled_var)) if filled_var else 0.0,
    }
