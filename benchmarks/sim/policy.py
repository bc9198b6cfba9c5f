"""A small autoregressive pointer policy that emits a permutation of K candidates item by item.

Encoder: an MLP on each candidate's features, then one transformer encoder layer over the
candidate set (so each item sees its competitors), giving keys ``h_i``. Decoder: at step t the
query is ``z_t = MLP([mean_i h_i, mean_{s<t} h_{y_s}, t/K])`` (the set context and what was
already emitted) and

    pi(y_t = i | y_<t) = softmax_{i not in y_<t} ( <W h_i, z_t> / sqrt(d) )

so ``log pi(y) = sum_t log pi(y_t | y_<t)``: one "token" per emitted item, which is exactly the
(bs, L) layout verl's estimators and policy losses take (L = K, item_token_pos[b, t] = t).
Teacher forcing computes every step's log-prob at once from the prefix sums of emitted keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PointerPolicy"]


class PointerPolicy(nn.Module):
    def __init__(self, num_features: int, d_model: int = 48, n_heads: int = 4):
        super().__init__()
        self.d = d_model
        self.embed = nn.Sequential(nn.Linear(num_features, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.encoder = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.query = nn.Sequential(nn.Linear(2 * d_model + 1, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Candidate encodings ``(B, K, d)``."""
        return self.encoder(self.embed(features))

    def _logits(self, keys: torch.Tensor, ctx: torch.Tensor, prefix_mean: torch.Tensor, step_frac: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, T, K)`` from projected ``keys (B, K, d)``, set context ``ctx (B, 1, d)``,
        ``prefix_mean (B, T, d)`` and ``step_frac (T,)``."""
        B, T, _ = prefix_mean.shape
        z = self.query(torch.cat([ctx.expand(B, T, self.d), prefix_mean, step_frac.view(1, T, 1).expand(B, T, 1)], -1))
        return torch.einsum("btd,bkd->btk", z, keys) / math.sqrt(self.d)

    def log_probs(self, features: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Per-step log-probs ``(B, K)`` of the permutations ``perm (B, K)`` (teacher forcing)."""
        h = self.encode(features)
        B, K, d = h.shape
        emitted = torch.gather(h, 1, perm.unsqueeze(-1).expand(B, K, d))
        prefix_sum = torch.cumsum(emitted, 1) - emitted  # sum over s < t
        steps = torch.arange(K, dtype=h.dtype, device=h.device)
        prefix_mean = prefix_sum / steps.clamp(min=1).view(1, K, 1)
        logits = self._logits(self.key(h), h.mean(1, keepdim=True), prefix_mean, steps / K)
        rank = torch.empty_like(perm).scatter_(1, perm, torch.arange(K, device=perm.device).expand(B, K))
        available = rank.unsqueeze(1) >= steps.long().view(1, K, 1)  # item k not yet emitted at step t
        logits = logits.masked_fill(~available, float("-inf"))
        logp = torch.log_softmax(logits, -1)
        return torch.gather(logp, 2, perm.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, *, greedy: bool = False, generator: torch.Generator | None = None):
        """Emit permutations ``(B, K)`` item by item; returns ``(perm, step_log_probs)``."""
        h = self.encode(features)
        B, K, d = h.shape
        taken = torch.zeros(B, K, dtype=torch.bool)
        prefix_sum = torch.zeros(B, d)
        perm = torch.empty(B, K, dtype=torch.long)
        logps = torch.empty(B, K)
        keys, ctx = self.key(h), h.mean(1, keepdim=True)  # fixed during decoding
        rows = torch.arange(B)
        for t in range(K):
            prefix_mean = (prefix_sum / max(t, 1)).unsqueeze(1)
            logits = self._logits(keys, ctx, prefix_mean, torch.tensor([t / K])).squeeze(1)
            logp = torch.log_softmax(logits.masked_fill(taken, float("-inf")), -1)
            if greedy:
                choice = logp.argmax(-1)
            else:
                choice = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            perm[:, t] = choice
            logps[:, t] = logp.gather(1, choice[:, None]).squeeze(-1)
            taken[rows, choice] = True
            prefix_sum = prefix_sum + h[rows, choice]
        return perm, logps
