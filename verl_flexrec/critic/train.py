"""Training the critic: Gaussian NLL on observed interactions, early stopping on a held-out slice.

:func:`train_critic` takes :class:`~verl_flexrec.critic.data.Interactions` (from parquet via
:func:`~verl_flexrec.critic.data.load_interactions`, or built directly) and returns a ready
:class:`~verl_flexrec.critic.predictor.CriticPredictor`.

Procedure (defaults in :class:`~verl_flexrec.critic.model.CriticConfig`):

1. Validation slice (:func:`~verl_flexrec.critic.data.validation_split`): each user's most
   recent ``val_frac`` of points when the data has timestamps (held-out data is always later),
   else a random ``val_frac``. The rest is the training part.
2. Support features (:mod:`.features`) for the training points by *cross-fitting*: ``folds``
   folds, each point's ridge biases, support counts, residual spreads and MF score computed
   without it. A network trained on in-sample statistics learns in-sample (too small)
   residuals; out-of-fold ones carry the estimation error new points really have, so the
   variance head learns how uncertain a sparse user or item is. Validation points get their
   features from the whole training part, as new points will from all the data.
3. Target: the bias model's out-of-fold residual divided by its std. Train all ensemble members at
   once (AdamW, warm-up + cosine), each on its own shuffled minibatches, Gaussian NLL.
4. After every epoch compute the ensemble's validation NLL (after the calibration of step 5);
   keep the best epoch, stop after ``patience`` epochs without improvement.
5. Calibrate: multiply every variance by ``mean(z^2)`` on the validation slice (the NLL-optimal
   scalar, shrunk toward 1 with 100 pseudo-points).
6. Serving statistics: the support features refitted on *all* observed points.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from .data import Interactions, Vocab, validation_split
from .features import BiasModel, SupportFeatures, mf_factors
from .model import CriticConfig, CriticEnsemble, ensemble_moments, gaussian_nll
from ..threads import torch_threads
from .predictor import CriticPredictor, pad_categories

__all__ = ["CriticTrainingError", "train_critic"]

BIAS_REG_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # "stronger regularisation for sparse or noisy data"
DEFAULT_BIAS_REG = 5.0  # without a validation slice
MF_REG_GRID = (0.03, 0.1, 0.3, 1.0)
# MF must beat the biases by this many standard errors on validation: measured t of the best grid
# value: <= 2.2 on the noise-only KuaiRec fixture and on sparse ML-100k (3 seeds), 22 on the
# synthetic matrix with rank-4 structure; 3 also covers picking the best of 4 penalties
MF_MIN_T = 3.0
MIN_STEPS = 16  # optimiser steps per epoch at least (batch_size is an upper bound)


def _catalog(inter: Interactions, items: Vocab, extra_items) -> tuple[Vocab, Vocab, np.ndarray]:
    """Category vocabulary, item catalogue (every item with side info) and its category matrix."""
    cat_vocab = Vocab(sorted({c for cs in inter.item_categories.values() for c in cs}))
    catalog = Vocab([*items.values, *sorted(set(inter.item_categories) - set(items.values)), *extra_items])
    rows = [[]]  # index 0: unknown item, no categories
    for item in catalog.values:
        rows.append([k for k in cat_vocab.lookup(inter.item_categories.get(item, ())) if k > 0])
    return cat_vocab, catalog, pad_categories(rows)


VAR_SCALE_RANGE = (0.05, 20.0)
CALIBRATION_PRIOR_POINTS = 100  # pseudo-count pulling the variance calibration toward 1


def _evaluate(model: CriticEnsemble, x, c, k, y, batch: int = 65536) -> dict:
    """Ensemble NLL (standardised units), the NLL after the scalar variance calibration, RMSE and
    the calibration scale (``mean(z^2)`` shrunk toward 1) on fixed tensors."""
    means, vars_ = [], []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            sl = slice(s, s + batch)
            mu, var = model(x[sl], c[sl], k[sl])
            m, v = ensemble_moments(mu.double(), var.double())
            means.append(m)
            vars_.append(v)
    model.train()
    mean, var, y = torch.cat(means), torch.cat(vars_), y.double()
    # shrink toward 1 with CALIBRATION_PRIOR_POINTS pseudo-points: a few dozen held-out points
    # (small or very sparse data) must not rescale every variance by 10x
    z2_sum = ((y - mean) ** 2 / var).sum().item()
    scale = (z2_sum + CALIBRATION_PRIOR_POINTS) / (len(y) + CALIBRATION_PRIOR_POINTS)
    scale = float(np.clip(scale, *VAR_SCALE_RANGE))
    return {
        "nll": gaussian_nll(mean, var, y).mean().item(),
        "nll_cal": gaussian_nll(mean, var * scale, y).mean().item(),
        "rmse": torch.sqrt(((mean - y) ** 2).mean()).item(),
        "scale": scale,
    }


class CriticTrainingError(RuntimeError):
    """Training failed in a way the user can act on (divergence)."""


def _warmup_cosine(total: int, warmup_frac: float = 0.1, floor: float = 0.04):
    """LR factor: linear warm-up over the first 10 % of steps, then cosine decay to ``floor``."""
    warm = max(1, int(round(warmup_frac * total)))

    def factor(step: int) -> float:
        if step < warm:
            return floor + (1 - floor) * (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def train_critic(
    inter: Interactions,
    config: CriticConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    num_threads: int | None = None,
) -> CriticPredictor:
    """Fit the ensemble critic on observed interactions; returns a predictor (``.save(path)`` it).

    ``num_threads`` sets torch's CPU threads for the duration (default: leave torch's setting);
    1 is much faster on a CPU that other processes keep busy.
    """
    with torch_threads(num_threads):
        return _train(inter, config or CriticConfig(), progress, log)


def _choose_bias_reg(tu, ti, ty, vu, vi, vy, nu: int, ni: int) -> float:
    """The ridge penalty of :data:`BIAS_REG_GRID` with the lowest validation MSE (5 without validation)."""
    if not len(vy):
        return DEFAULT_BIAS_REG
    mse = [np.mean((vy - BiasModel(r, r).fit(tu, ti, ty, nu, ni).predict(vu, vi)) ** 2) for r in BIAS_REG_GRID]
    return BIAS_REG_GRID[int(np.argmin(mse))]


def _choose_mf_reg(config, bias_reg, tu, ti, ty, vu, vi, vy, nu: int, ni: int) -> float | None:
    """MF's penalty of :data:`MF_REG_GRID` whose bias + MF prediction has the lowest validation MSE,
    if that beats the biases alone clearly (paired t > :data:`MF_MIN_T` on the squared errors); else
    None: no MF feature (on data without user x item structure it is a noise input to overfit)."""
    if not config.mf_dim or config.mf_reg is not None:
        return config.mf_reg if config.mf_dim else None
    if len(vy) < 2:
        return None  # no evidence that it helps (set mf_reg to use it anyway)
    bias = BiasModel(bias_reg, bias_reg).fit(tu, ti, ty, nu, ni)
    resid, base = ty - bias.predict(tu, ti), bias.predict(vu, vi)
    err0 = (vy - base) ** 2
    best, best_gain = None, 0.0
    for reg in MF_REG_GRID:
        p, q = mf_factors(tu, ti, resid, nu, ni, config.mf_dim, reg, config.seed)
        gain = err0 - (vy - base - np.einsum("nf,nf->n", p[vu], q[vi])) ** 2
        t = gain.mean() / (gain.std(ddof=1) / math.sqrt(len(gain)) + 1e-12)
        if t > MF_MIN_T and gain.mean() > best_gain:
            best, best_gain = reg, float(gain.mean())
    return best


def _codes(inter: Interactions, users: Vocab, items: Vocab) -> tuple[np.ndarray, np.ndarray]:
    return users.lookup(inter.user_ids), items.lookup(inter.item_ids)


def _train(inter, config, progress, log) -> CriticPredictor:
    log = log or (lambda msg: None)
    n = len(inter)
    if n < 2:
        raise ValueError(f"the critic needs at least 2 observed interactions, got {n}")
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    tr_idx, val_idx = validation_split(inter, config.val_frac, config.seed)
    n_val = len(val_idx)
    tr, va = inter.subset(tr_idx), inter.subset(val_idx)

    # one vocabulary for everything the critic learned from; a user or item absent from a
    # feature-fitting part simply has zero support there (as a new one has at serving time)
    users = Vocab(sorted(set(inter.user_ids)))
    items = Vocab(sorted(set(inter.item_ids)))
    needs = Vocab(sorted(set(tr.needs) - {""})) if config.use_need else Vocab()
    cat_vocab, catalog, catalog_cats = _catalog(inter, items, [])
    nu, ni = len(users), len(items)

    tu, ti = _codes(tr, users, items)
    bias_reg = config.bias_reg
    vcodes = _codes(va, users, items)
    if bias_reg is None:
        bias_reg = _choose_bias_reg(tu, ti, tr.interest, *vcodes, va.interest, nu, ni)
    mf_reg = _choose_mf_reg(config, bias_reg, tu, ti, tr.interest, *vcodes, va.interest, nu, ni)
    mf_dim = config.mf_dim if mf_reg is not None else 0

    def support() -> SupportFeatures:
        return SupportFeatures(bias_reg, config.support_prior, mf_dim, mf_reg or 0.0, config.seed)

    # stage 1: support features -- out-of-fold on the training part, from all of it for validation
    x_tr, base_tr = support().cross_fit(tu, ti, tr.interest, nu, ni, config.folds, config.seed)
    resid_std = float(np.std(tr.interest - base_tr)) or 1.0

    def tensors(part: Interactions, x: np.ndarray, base: np.ndarray):
        k = torch.from_numpy(needs.lookup(part.needs)) if config.use_need else torch.zeros(len(part), dtype=torch.long)
        c = torch.from_numpy(catalog_cats[catalog.lookup(part.item_ids)])
        y = torch.from_numpy((part.interest - base) / resid_std).float()
        return torch.from_numpy(x), c, k, y

    tx, tc, tk, ty = tensors(tr, x_tr, base_tr)
    if n_val:
        vu, vi = vcodes
        x_va, base_va = support().fit(tu, ti, tr.interest, nu, ni).transform(vu, vi)
        vx, vc, vk, vy = tensors(va, x_va, base_va)

    model = CriticEnsemble(config, x_tr.shape[1], len(cat_vocab), len(needs))
    model.feature_mean.copy_(tx.mean(0))
    model.feature_std.copy_(tx.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    m, n_tr = config.ensemble, len(tr)
    # small data: shrink the batch so an epoch still has ~MIN_STEPS optimiser steps
    bs = max(1, min(config.batch_size, n_tr, max(32, math.ceil(n_tr / MIN_STEPS))))
    steps = math.ceil(n_tr / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(config.epochs * steps))
    gen = torch.Generator().manual_seed(config.seed)

    best = (math.inf, -1, None)
    history: list[dict] = []
    bad_epochs = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="critic", unit="epoch", dynamic_ncols=True)
    try:
        for epoch in range(config.epochs):
            order = torch.argsort(torch.rand(m, n_tr, generator=gen), dim=1)
            total, count = 0.0, 0
            for s in range(steps):
                idx = order[:, s * bs : (s + 1) * bs]  # (M, B)
                mu, var = model(tx[idx], tc[idx], tk[idx])
                y = ty[idx]
                loss = gaussian_nll(mu, var, y, config.beta).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() / m * idx.shape[1]
                count += idx.shape[1]
            rec = {"epoch": epoch + 1, "train_nll": total / max(count, 1)}
            if not math.isfinite(rec["train_nll"]):
                raise CriticTrainingError(
                    f"critic training diverged (non-finite loss) in epoch {epoch + 1}; lower the learning rate "
                    "or check the interest values for extreme outliers"
                )
            if n_val:
                ev = _evaluate(model, vx, vc, vk, vy)
                rec.update(val_nll=ev["nll"], val_nll_cal=ev["nll_cal"], val_rmse=ev["rmse"])
            history.append(rec)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k != "epoch"})
                bar.update(1)
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
            # with calibration on, select the epoch whose *calibrated* held-out NLL is best: a
            # globally over-confident variance is fixed afterwards and should not end training
            score = rec.get("val_nll_cal" if config.calibrate else "val_nll", rec["train_nll"])
            if score < best[0] - 1e-5:
                best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
                bad_epochs = 0
            else:
                bad_epochs += 1
                if n_val and bad_epochs >= config.patience:
                    log(f"early stop after epoch {epoch + 1}: best epoch {best[1]} (score {best[0]:.4f})")
                    break
    finally:
        if bar is not None:
            bar.close()
    if best[2] is None:
        raise CriticTrainingError("critic training produced no finite held-out score; check the interest values")
    model.load_state_dict(best[2])

    var_scale = 1.0
    val_metrics = {}
    if n_val:
        ev = _evaluate(model, vx, vc, vk, vy)
        if config.calibrate:
            var_scale = ev["scale"]
        val_metrics = {
            "val_nll_std_units": ev["nll_cal"] if config.calibrate else ev["nll"],
            "val_nll_std_units_uncalibrated": ev["nll"],
            "val_rmse": ev["rmse"] * resid_std,
        }

    # serving: support statistics of every observed point (the validation slice holds each
    # user's most recent ones, the most telling about what they do next)
    au, ai = _codes(inter, users, items)
    final = support().fit(au, ai, inter.interest, nu, ni)
    seconds = time.perf_counter() - t0
    seen_pairs = np.unique(au * (len(items) + 1) + ai)
    meta = {
        "sources": list(inter.sources),
        "data_stats": dict(inter.stats),
        "n_points": n,
        "n_train": int(n_tr),
        "n_val": int(n_val),
        "n_users": len(users),
        "n_items": len(items),
        "n_categories": len(cat_vocab),
        "validation": "time-later (each user's latest points)" if inter.has_time and n_val else
                      ("random" if n_val else "none"),
        "bias_reg": float(bias_reg),
        "mf_reg": mf_reg,
        "best_epoch": int(best[1]),
        "epochs_run": len(history),
        "train_seconds": seconds,
        **val_metrics,
    }
    return CriticPredictor(
        model.eval(),
        features=final,
        users=users,
        items=items,
        categories=cat_vocab,
        needs=needs,
        catalog=catalog,
        catalog_categories=catalog_cats,
        target_std=resid_std,
        var_scale=var_scale,
        seen_pairs=seen_pairs,
        meta=meta,
        history=history,
    )
