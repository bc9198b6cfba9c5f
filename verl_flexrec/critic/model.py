"""The critic network: a deep ensemble of heteroscedastic MLPs over support features and categories.

Every member is an independent network; their parameters are stacked along a leading member axis
``M`` so one batched matmul (``torch.baddbmm``) runs the whole ensemble, and each member can see
its own minibatch. Pure torch, no verl import.

Member m, for a (user u, item i, categories C(i), need n) query with support features
``x(u, i)`` (:mod:`.features`: ridge biases, log support counts, residual spreads, MF score)::

    e_C   = mean of the item's category embeddings (0 when it has none)
    h     = MLP([standardise(x), e_C, e_n])                     (SiLU, hidden sizes in config)
    mu_m  = head_mu(h)                                          (correction to the bias model)
    var_m = softplus(head_var(h)) + min_var                     (aleatoric variance)

Ensemble prediction (Lakshminarayanan et al. 2017): ``mean = avg_m mu_m``,
``var = avg_m var_m + var_m(mu_m)`` (aleatoric + epistemic). Targets are the bias model's residuals
divided by their standard deviation; the predictor maps back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CriticConfig", "CriticEnsemble", "ensemble_moments", "gaussian_nll"]


@dataclass
class CriticConfig:
    """Architecture and training defaults (all choices: the paper does not state its critic's)."""

    # architecture
    ensemble: int = 5  # deep-ensemble members (1 = a single heteroscedastic network)
    emb_dim: int = 16  # category and need embeddings
    hidden: tuple[int, ...] = (64, 64)
    use_categories: bool = True  # item category embeddings as side information
    use_need: bool = False  # need embedding; off: the critic predicts the need-free base signal
    min_var: float = 1e-4  # variance floor, in standardised target units
    # support features (:mod:`.features`)
    folds: int = 5  # cross-fitting folds for the training points' features
    bias_reg: float | None = None  # ridge penalty of the biases; None: the best of BIAS_REG_GRID on validation
    support_prior: float = 5.0  # pseudo-points pulling a user's / item's residual spread to the global one
    mf_dim: int = 8  # cornac MF factors on the bias residuals (0: no MF feature)
    mf_reg: float | None = None  # MF's L2 penalty; None: the best of MF_REG_GRID on validation, or no MF
    # feature at all when none of them predicts the validation slice better than the biases alone
    # training
    epochs: int = 40
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-3
    beta: float = 0.0  # beta-NLL (Seitzer et al. 2022); 0 = plain Gaussian NLL
    val_frac: float = 0.1  # time-later validation slice for early stopping and calibration
    patience: int = 5
    calibrate: bool = True  # scale the variance by mean(z^2) on the validation slice
    seed: int = 0

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        checks = {
            "ensemble": self.ensemble >= 1,
            "emb_dim": self.emb_dim >= 1,
            "hidden": len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
            "min_var": self.min_var > 0,
            "folds": self.folds >= 2,
            "bias_reg": self.bias_reg is None or self.bias_reg >= 0,
            "support_prior": self.support_prior > 0,
            "mf_dim": self.mf_dim >= 0,
            "mf_reg": self.mf_reg is None or self.mf_reg >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "beta": 0 <= self.beta <= 1,
            "val_frac": 0 <= self.val_frac < 1,
            "patience": self.patience >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid critic config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CriticConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def gaussian_nll(mu: torch.Tensor, var: torch.Tensor, y: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Elementwise heteroscedastic Gaussian NLL ``0.5 (log var + (y - mu)^2 / var + log 2 pi)``.

    ``beta > 0`` gives beta-NLL (each term weighted by ``var.detach() ** beta``), which keeps the
    mean fitted where the predicted variance is large.
    """
    nll = 0.5 * (torch.log(var) + (y - mu) ** 2 / var + math.log(2 * math.pi))
    if beta > 0:
        nll = nll * var.detach() ** beta
    return nll


def ensemble_moments(mu: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matched mixture of ``(M, ...)`` member Gaussians: mean and aleatoric + epistemic variance."""
    mean = mu.mean(0)
    epistemic = mu.var(0, unbiased=False) if mu.shape[0] > 1 else torch.zeros_like(mean)
    return mean, var.mean(0) + epistemic


class CriticEnsemble(nn.Module):
    """``M`` stacked heteroscedastic MLP critics over ``n_features`` support features.

    ``feature_mean`` / ``feature_std`` (buffers, set by training) standardise the features; index 0
    of the category and need tables means "none" / "unknown".
    """

    def __init__(self, config: CriticConfig, n_features: int, n_categories: int = 0, n_needs: int = 0):
        super().__init__()
        self.config = config
        m, d = config.ensemble, config.emb_dim
        self.n_features, self.n_categories, self.n_needs = n_features, n_categories, n_needs
        self.use_categories = bool(config.use_categories and n_categories > 0)
        self.use_need = bool(config.use_need)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        din = n_features
        if self.use_categories:
            self.cat_emb = nn.Parameter(torch.randn(m, n_categories + 1, d) * 0.05)
            din += d
        if self.use_need:
            self.need_emb = nn.Parameter(torch.randn(m, n_needs + 1, d) * 0.05)
            din += d
        dims = [din, *config.hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.randn(m, a, b) * math.sqrt(2.0 / a)))
            self.biases.append(nn.Parameter(torch.zeros(m, 1, b)))
        self.head_w = nn.Parameter(torch.randn(m, dims[-1], 2) * math.sqrt(1.0 / dims[-1]) * 0.1)
        # start at "no correction", variance ~1 (the standardised residual's marginal)
        self.head_b = nn.Parameter(torch.tensor([0.0, math.log(math.e - 1.0)]).repeat(m, 1, 1))

    @property
    def members(self) -> int:
        return self.config.ensemble

    def forward(
        self, features: torch.Tensor, categories: torch.Tensor | None = None, needs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member predictions ``(mu, var)``, each ``(M, B)``, in standardised residual units.

        ``features`` ``(B, F)`` (shared by all members) or ``(M, B, F)``; ``categories`` ``(B, C)`` or
        ``(M, B, C)`` category indices (0 = padding); ``needs`` ``(B,)`` or ``(M, B)``.
        """
        m = self.config.ensemble
        x = (features - self.feature_mean) / self.feature_std
        if x.dim() == 2:
            x = x.expand(m, *x.shape)
        feats = [x]
        members = torch.arange(m, device=x.device)
        if self.use_categories:
            if categories is None:
                categories = torch.zeros(x.shape[1], 1, dtype=torch.long)
            cats = categories.to(torch.long)
            if cats.dim() == 2:  # (B, C), shared by all members
                ec = self.cat_emb[:, cats]
                mask = (cats > 0).to(ec.dtype)[None, :, :, None]
            else:  # (M, B, C)
                ec = self.cat_emb[members[:, None, None], cats]
                mask = (cats > 0).to(ec.dtype)[..., None]
            feats.append((ec * mask).sum(2) / mask.sum(2).clamp(min=1.0))
        if self.use_need:
            if needs is None:
                needs = torch.zeros(x.shape[1], dtype=torch.long)
            feats.append(self.need_emb[:, needs] if needs.dim() == 1 else self.need_emb[members[:, None], needs])
        h = torch.cat(feats, dim=-1)
        for w, b in zip(self.weights, self.biases):
            h = F.silu(torch.baddbmm(b, h, w))
        out = torch.baddbmm(self.head_b, h, self.head_w)
        return out[..., 0], F.softplus(out[..., 1]) + self.config.min_var
