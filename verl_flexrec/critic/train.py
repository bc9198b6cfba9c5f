"""Training the critic: Gaussian NLL on observed interactions, early stopping on a held-out slice.

:func:`train_critic` takes :class:`~verl_flexrec.critic.data.Interactions` (from parquet via
:func:`~verl_flexrec.critic.data.load_interactions`, or built directly) and returns a ready
:class:`~verl_flexrec.critic.predictor.CriticPredictor`.

Procedure (defaults in :class:`~verl_flexrec.critic.model.CriticConfig`):

1. Split the observed points at random into training and a held-out slice (``val_frac``).
   Vocabularies (users, items, needs) come from the training part only; index 0 is "unknown".
2. Standardise the target with the training mean and std.
3. Train all ensemble members at once (AdamW), each on its own shuffled minibatches, with id
   dropout: with probability ``id_dropout`` a sample's user (and, independently, its item) id is
   replaced by "unknown", so the unknown slots learn the population-level mean and the wider
   variance an unseen user or item really has. Item categories stay visible.
4. After every epoch compute the ensemble's held-out NLL; keep the best epoch, stop after
   ``patience`` epochs without improvement.
5. Calibrate: multiply every variance by ``mean(z^2)`` on the held-out slice (the NLL-optimal
   scalar), so the predictive intervals have the right width on average.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from .data import Interactions, Vocab
from .model import CriticConfig, CriticEnsemble, ensemble_moments, gaussian_nll
from .predictor import CriticPredictor, pad_categories, torch_threads

__all__ = ["CriticTrainingError", "train_critic"]

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


def _evaluate(model: CriticEnsemble, u, i, k, c, y, batch: int = 65536) -> dict:
    """Ensemble NLL (standardised units), NLL after the scalar variance calibration, RMSE, and the
    calibration scale (``mean(z^2)`` shrunk toward 1), on fixed tensors; also the ensemble mean and variance."""
    means, vars_ = [], []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            sl = slice(s, s + batch)
            mu, var = model(u[sl], i[sl], k[sl], c[sl])
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
        "mean": mean.numpy(),
        "var": var.numpy(),
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


def _train(inter, config, progress, log) -> CriticPredictor:
    log = log or (lambda msg: None)
    n = len(inter)
    if n < 2:
        raise ValueError(f"the critic needs at least 2 observed interactions, got {n}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    perm = rng.permutation(n)
    n_val = int(round(config.val_frac * n)) if config.val_frac > 0 else 0
    n_val = min(max(n_val, 1 if config.val_frac > 0 else 0), n - 1)
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    tr, va = inter.subset(tr_idx), inter.subset(val_idx)

    users = Vocab(sorted(set(tr.user_ids)))
    items = Vocab(sorted(set(tr.item_ids)))
    needs = Vocab(sorted(set(tr.needs) - {""})) if config.use_need else Vocab()
    cat_vocab, catalog, catalog_cats = _catalog(inter, items, sorted(set(inter.item_ids)))
    # the model's own item -> categories table (vocabulary items are the catalogue's first entries)
    item_cats = torch.from_numpy(catalog_cats[: len(items) + 1].copy())

    y_mean = float(tr.interest.mean())
    y_std = float(tr.interest.std()) or 1.0

    def tensors(part: Interactions):
        u = torch.from_numpy(users.lookup(part.user_ids))
        it = torch.from_numpy(items.lookup(part.item_ids))
        k = torch.from_numpy(needs.lookup(part.needs)) if config.use_need else torch.zeros(len(part), dtype=torch.long)
        c = torch.from_numpy(catalog_cats[catalog.lookup(part.item_ids)])
        y = torch.from_numpy((part.interest - y_mean) / y_std).float()
        return u, it, k, c, y

    tu, ti, tk, tc, ty = tensors(tr)
    vu, vi, vk, vc, vy = tensors(va) if n_val else (None,) * 5

    model = CriticEnsemble(config, len(users), len(items), len(cat_vocab), len(needs), item_categories=item_cats)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    m, n_tr = config.ensemble, len(tr)
    # small data: shrink the batch so an epoch still has ~MIN_STEPS optimiser steps
    bs = max(1, min(config.batch_size, n_tr, max(64, math.ceil(n_tr / MIN_STEPS))))
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
                u, it, k, c, y = tu[idx], ti[idx], tk[idx], tc[idx], ty[idx]
                if config.id_dropout > 0:
                    u = torch.where(torch.rand(u.shape, generator=gen) < config.id_dropout, 0, u)
                    it = torch.where(torch.rand(it.shape, generator=gen) < config.id_dropout, 0, it)
                mu, var = model(u, it, k, c)
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
                ev = _evaluate(model, vu, vi, vk, vc, vy)
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
        ev = _evaluate(model, vu, vi, vk, vc, vy)
        if config.calibrate:
            var_scale = ev["scale"]
        val_metrics = {
            "val_nll_std_units": ev["nll_cal"] if config.calibrate else ev["nll"],
            "val_nll_std_units_uncalibrated": ev["nll"],
            "val_rmse": ev["rmse"] * y_std,
        }

    seconds = time.perf_counter() - t0
    train_pairs = np.unique(users.lookup(tr.user_ids) * (len(items) + 1) + items.lookup(tr.item_ids))
    meta = {
        "sources": list(inter.sources),
        "data_stats": dict(inter.stats),
        "n_points": n,
        "n_train": int(n_tr),
        "n_val": int(n_val),
        "n_users": len(users),
        "n_items": len(items),
        "n_categories": len(cat_vocab),
        "best_epoch": int(best[1]),
        "epochs_run": len(history),
        "train_seconds": seconds,
        **val_metrics,
    }
    return CriticPredictor(
        model.eval(),
        users=users,
        items=items,
        categories=cat_vocab,
        needs=needs,
        catalog=catalog,
        catalog_categories=catalog_cats,
        target_mean=y_mean,
        target_std=y_std,
        var_scale=var_scale,
        baseline={"mean": y_mean, "var": y_std**2},
        train_pairs=train_pairs,
        meta=meta,
        history=history,
    )
