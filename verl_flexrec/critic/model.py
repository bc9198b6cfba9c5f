"""The critic network: a deep ensemble of heteroscedastic MLPs over user, item, category and need.

Every member is an independent network; their parameters are stacked along a leading member axis
``M`` so one batched matmul (``torch.baddbmm``) runs the whole ensemble, and each member can see
its own minibatch (own shuffling, own id dropout). Pure torch, no verl import.

Member m, for a (user u, item i, categories C(i), need n) query::

    e_u, e_i, e_n = embeddings (index 0 = "unknown", trained by id dropout)
    e_C           = mean of the item's category embeddings (0 when it has none)
    h             = MLP([e_u, e_i, e_C, e_n, e_u * e_i])          (SiLU, hidden sizes in config)
    mu_m          = head_mu(h)
    var_m         = softplus(head_var(h)) + min_var               (aleatoric variance)

Ensemble prediction (Lakshminarayanan et al. 2017): ``mean = avg_m mu_m``,
``var = avg_m var_m + var_m(mu_m)`` (aleatoric + epistemic). Targets are standardised; the
predictor maps back.
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
    emb_dim: int = 32
    hidden: tuple[int, ...] = (128, 64)
    use_categories: bool = True  # item category embeddings as side information
    use_need: bool = False  # need embedding; off: the critic predicts the need-free base signal
    min_var: float = 1e-4  # variance floor, in standardised target units
    # training
    epochs: int = 40
    batch_size: int = 2048
    lr: float = 3e-3
    weight_decay: float = 1e-4
    id_dropout: float = 0.1  # P(user id -> unknown), P(item id -> unknown), independently per sample
    beta: float = 0.0  # beta-NLL (Seitzer et al. 2022); 0 = plain Gaussian NLL
    val_frac: float = 0.1  # held-out observed slice for early stopping and calibration
    patience: int = 5
    calibrate: bool = True  # scale the variance by mean(z^2) on the held-out slice
    seed: int = 0

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        checks = {
            "ensemble": self.ensemble >= 1,
            "emb_dim": self.emb_dim >= 1,
            "hidden": len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
            "min_var": self.min_var > 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "id_dropout": 0 <= self.id_dropout < 1,
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
    """``M`` stacked heteroscedastic MLP critics; index 0 of every id table means "unknown".

    Args:
        n_users, n_items, n_categories, n_needs: vocabulary sizes without the unknown slot.
        item_categories: ``(n_items + 1, C)`` long tensor of category indices per item (0 = padding).
    """

    def __init__(
        self,
        config: CriticConfig,
        n_users: int,
        n_items: int,
        n_categories: int = 0,
        n_needs: int = 0,
        item_categories: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        m, d = config.ensemble, config.emb_dim
        self.n_users, self.n_items, self.n_categories, self.n_needs = n_users, n_items, n_categories, n_needs
        self.use_categories = bool(config.use_categories and n_categories > 0)
        self.use_need = bool(config.use_need)

        def table(n):
            return nn.Parameter(torch.randn(m, n + 1, d) * 0.05)

        self.user_emb = table(n_users)
        self.item_emb = table(n_items)
        parts = 3  # user, item, user*item
        if self.use_categories:
            self.cat_emb = table(n_categories)
            if item_categories is None:
                item_categories = torch.zeros(n_items + 1, 1, dtype=torch.long)
            if item_categories.shape[0] != n_items + 1:
                raise ValueError(f"item_categories has {item_categories.shape[0]} rows, expected {n_items + 1}")
            self.register_buffer("item_categories", item_categories.to(torch.long).contiguous())
            parts += 1
        if self.use_need:
            self.need_emb = table(n_needs)
            parts += 1
        dims = [parts * d, *config.hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for din, dout in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.randn(m, din, dout) * math.sqrt(2.0 / din)))
            self.biases.append(nn.Parameter(torch.zeros(m, 1, dout)))
        self.head_w = nn.Parameter(torch.randn(m, dims[-1], 2) * math.sqrt(1.0 / dims[-1]) * 0.1)
        # start near mean 0, variance ~1 (the standardised target's marginal)
        self.head_b = nn.Parameter(torch.tensor([0.0, math.log(math.e - 1.0)]).repeat(m, 1, 1))

    @property
    def members(self) -> int:
        return self.config.ensemble

    def _gather(self, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``table (M, N, d)``, ``idx (M, B)`` or ``(B,)`` -> ``(M, B, d)``."""
        m = table.shape[0]
        if idx.dim() == 1:
            return table[:, idx]
        return table[torch.arange(m, device=idx.device)[:, None], idx]

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        needs: torch.Tensor | None = None,
        categories: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member predictions ``(mu, var)``, each ``(M, B)``, in standardised target units.

        ``users``/``items``/``needs`` are ``(B,)`` (shared by all members) or ``(M, B)``.
        ``categories`` ``(B, C)`` or ``(M, B, C)`` overrides the item table's categories (for items
        the critic has never seen, and in training, where id dropout hides the id but not the side
        information); by default they are looked up from ``items``.
        """
        eu = self._gather(self.user_emb, users)
        ei = self._gather(self.item_emb, items)
        feats = [eu, ei, eu * ei]
        if self.use_categories:
            if categories is None:
                categories = self.item_categories[items]
            cats = categories.to(torch.long)
            if cats.dim() == 2:  # (B, C), shared by all members
                ec = self.cat_emb[:, cats]
                mask = (cats > 0).to(ec.dtype)[None, :, :, None]
            else:  # (M, B, C)
                ec = self.cat_emb[torch.arange(cats.shape[0], device=cats.device)[:, None, None], cats]
                mask = (cats > 0).to(ec.dtype)[..., None]
            denom = mask.sum(2).clamp(min=1.0)
            feats.append((ec * mask).sum(2) / denom)  # (M, B, d)
        if self.use_need:
            if needs is None:
                needs = torch.zeros_like(users if users.dim() == 1 else users[0])
            feats.append(self._gather(self.need_emb, needs))
        h = torch.cat(feats, dim=-1)
        for w, b in zip(self.weights, self.biases):
            h = F.silu(torch.baddbmm(b, h, w))
        out = torch.baddbmm(self.head_b, h, self.head_w)
        mu = out[..., 0]
        var = F.softplus(out[..., 1]) + self.config.min_var
        return mu, var
