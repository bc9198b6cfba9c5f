"""A token-level ranking policy that writes reasoning tokens, then K item ids of two tokens each.

The response of one rollout is ``L = R + 2K`` tokens::

    r_1 .. r_R                     "reasoning": tokens of a small vocabulary, chosen from the prompt
    a_1 b_1  a_2 b_2 ... a_K b_K   the ranked list: item k's catalogue id spelled as (a_k, b_k)

which is the layout the ``flexrec`` estimator sees from an LLM: reasoning tokens are not item
tokens (``item_token_pos = -1``), and both tokens of the k-th id carry position k.

Scores. A context MLP reads the prompt and gives the reasoning logits (one head per reasoning
slot). The chosen reasoning tokens' embeddings ``e`` condition a candidate MLP, whose output is a
score ``s_i`` per candidate (the prompt's need is also in every candidate's features, so reasoning
is useful but not the only route to the need)::

    s_i = w3 . relu(W2 relu(W1 x_i + e) + b2) + b3

Decoding. Before slot k, ``rem`` is the set of candidates not yet written. The first id token is
chosen among all ``n_prefix`` first tokens; a first token that no remaining candidate starts with
has the learned "hallucination" logit ``h_a`` (a made-up or repeated id), one that does has the
log-sum-exp of those candidates' scores. The second token: a remaining candidate's completion
has its score, any other of the ``id_base`` tokens has ``h_b``::

    log pi(a) = [LSE_{i in rem, a_i = a} s_i  or h_a] - log(sum_{i in rem} e^{s_i} + n_empty e^{h_a})
    log pi(b|a) = [s_i if (a, b) = id_i, i in rem  or h_b] - log(sum_{i in rem, a_i=a} e^{s_i} + (id_base - n_a) e^{h_b})

An id that is not a remaining candidate makes the whole output invalid (decoding goes on; the
list then misses an item). With ``h -> -inf`` this is a Plackett-Luce ranking by ``s``.

Seeds are batched: every parameter has a leading axis of size S (one independent policy per seed,
initialised from that seed alone), all inputs are ``(S, B, ...)`` and every op is a batched matmul.
Because the seeds share no parameter, a loss that sums the seeds' losses gives each seed exactly
its own gradient, and Adam (element-wise) updates each seed as if it ran alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Rollouts", "SeedBatchedPolicy", "item_token_positions"]


def item_token_positions(num_reasoning: int, K: int) -> torch.Tensor:
    """``(R + 2K,)`` ranked position of the item each response token spells, -1 for reasoning."""
    return torch.cat([torch.full((num_reasoning,), -1, dtype=torch.long), torch.arange(K).repeat_interleave(2)])


@dataclass
class Rollouts:
    """Sampled responses of ``N = S * B`` rollouts (seed-major)."""

    reasoning: torch.Tensor  # (N, R) long
    id_first: torch.Tensor  # (N, K) long, first id token of each slot
    id_second: torch.Tensor  # (N, K) long
    order: torch.Tensor  # (N, K) long, candidate written at each slot, -1 = not a remaining candidate
    log_probs: torch.Tensor  # (N, R + 2K) float32, per-token log-probs under the sampling policy

    @property
    def valid(self) -> torch.Tensor:
        """A valid output names every candidate exactly once."""
        return (self.order >= 0).all(-1)


def _init_linear(gens: list[torch.Generator], fan_in: int, shape: tuple[int, ...]) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * bound for g in gens])


class SeedBatchedPolicy(nn.Module):
    def __init__(
        self,
        seeds: list[int],
        num_features: int,
        num_context: int,
        n_prefix: int,
        id_base: int,
        *,
        d_model: int = 64,
        num_reasoning: int = 2,
        reasoning_vocab: int = 8,
        hallucination_logit: float = -9.0,
    ):
        super().__init__()
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        S, F, C, d, R, V = len(seeds), num_features, num_context, d_model, num_reasoning, reasoning_vocab
        self.S, self.R, self.V, self.n_prefix, self.id_base = S, R, V, n_prefix, id_base
        p = nn.Parameter
        self.ctx_w = p(_init_linear(gens, C, (C, d)))
        self.ctx_b = p(_init_linear(gens, C, (1, d)))
        self.reason_w = p(_init_linear(gens, d, (d, R * V)))
        self.reason_b = p(_init_linear(gens, d, (1, R * V)))
        self.reason_emb = p(torch.stack([torch.randn((R * V, d), generator=g) * 0.5 for g in gens]))
        self.w1 = p(_init_linear(gens, F, (F, d)))
        self.b1 = p(_init_linear(gens, F, (1, d)))
        self.w2 = p(_init_linear(gens, d, (d, d)))
        self.b2 = p(_init_linear(gens, d, (1, d)))
        self.w3 = p(_init_linear(gens, d, (d, 1)))
        self.b3 = p(_init_linear(gens, d, (1, 1)))
        self.halluc = p(torch.full((S, 2), float(hallucination_logit)))  # (first token, second token)

    def clip_grad_norm_per_seed_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` applied to each seed's own gradient; returns the
        per-seed norms before clipping."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norms = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads).sqrt()
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *([1] * (g.dim() - 1))))
        return norms

    # -- network -------------------------------------------------------------------------------
    def reasoning_logits(self, context: torch.Tensor) -> torch.Tensor:
        """``(S, B, R, V)`` logits of the reasoning tokens from ``context (S, B, C)``."""
        S, B, _ = context.shape
        h = torch.relu(torch.baddbmm(self.ctx_b, context, self.ctx_w))
        return torch.baddbmm(self.reason_b, h, self.reason_w).view(S, B, self.R, self.V)

    def scores(self, features: torch.Tensor, reasoning: torch.Tensor) -> torch.Tensor:
        """Candidate scores ``(S, B, K)`` from ``features (S, B, K, F)`` and ``reasoning (S, B, R)``."""
        S, B, K, F = features.shape
        slot = reasoning + torch.arange(self.R, device=reasoning.device) * self.V  # row in reason_emb
        e = torch.gather(self.reason_emb, 1, slot.reshape(S, B * self.R, 1).expand(-1, -1, self.reason_emb.shape[-1]))
        e = e.view(S, B, self.R, -1).sum(2)  # (S, B, d)
        h = torch.baddbmm(self.b1, features.reshape(S, B * K, F), self.w1).view(S, B, K, -1) + e[:, :, None, :]
        h = torch.relu(h).reshape(S, B * K, -1)
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        return torch.baddbmm(self.b3, h, self.w3).view(S, B, K)

    def _halluc(self, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.halluc.repeat_interleave(B, 0)  # (N, 2), seed-major like the rollouts
        return h[:, 0], h[:, 1]

    # -- log-probs of given responses (teacher forcing) -------------------------------------------
    def log_probs(self, features, context, id_prefix, id_suffix, ro: Rollouts) -> torch.Tensor:
        """Per-token log-probs ``(N, R + 2K)`` of the responses ``ro`` (differentiable)."""
        S, B, K, _ = features.shape
        N = S * B
        rl = torch.log_softmax(self.reasoning_logits(context), -1).reshape(N, self.R, self.V)
        lp_reason = torch.gather(rl, 2, ro.reasoning[..., None]).squeeze(-1)
        s = self.scores(features, ro.reasoning.view(S, B, self.R)).reshape(N, K)
        ha, hb = self._halluc(B)
        pfx, sfx = id_prefix.reshape(N, K), id_suffix.reshape(N, K)
        # rem[n, t, i]: candidate i not yet written before slot t
        written_at = torch.full((N, K), K, dtype=torch.long)
        slots = torch.arange(K).expand(N, K)
        ok = ro.order >= 0
        written_at[ok.nonzero(as_tuple=True)[0], ro.order[ok]] = slots[ok]
        rem = written_at[:, None, :] >= torch.arange(K)[None, :, None]  # (N, T, K)
        lp_a, lp_b = _slot_log_probs(s, ha, hb, pfx, sfx, rem, ro.id_first, ro.id_second, self.n_prefix, self.id_base)
        lp_items = torch.stack([lp_a, lp_b], -1).reshape(N, 2 * K)
        return torch.cat([lp_reason, lp_items], 1)

    # -- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, features, context, id_prefix, id_suffix, *, greedy: bool = False, generator=None) -> Rollouts:
        S, B, K, _ = features.shape
        N = S * B
        rl = torch.log_softmax(self.reasoning_logits(context), -1).reshape(N * self.R, self.V)
        r = _choose(rl, greedy, generator)
        lp_reason = rl.gather(1, r[:, None]).view(N, self.R)
        r = r.view(N, self.R)
        s = self.scores(features, r.view(S, B, self.R)).reshape(N, K)
        ha, hb = self._halluc(B)
        pfx, sfx = id_prefix.reshape(N, K), id_suffix.reshape(N, K)
        onehot = (pfx[:, :, None] == torch.arange(self.n_prefix)[None, None, :]).to(torch.float64)  # (N, K, P)
        s_max = s.max(-1, keepdim=True).values
        es = torch.exp((s - s_max).to(torch.float64))  # float64: no bucket underflows to "empty"
        rem = torch.ones(N, K, dtype=torch.bool)
        rows = torch.arange(N)
        order = torch.full((N, K), -1, dtype=torch.long)
        first, second = torch.empty(N, K, dtype=torch.long), torch.empty(N, K, dtype=torch.long)
        lps = torch.empty(N, 2 * K)
        neg = torch.tensor(float("-inf"))
        for t in range(K):
            # first token: LSE of the remaining candidates starting with it, else h_a
            sums = torch.bmm((es * rem)[:, None, :], onehot).squeeze(1)  # (N, P)
            per_bucket = (torch.log(sums) + s_max).to(s.dtype)
            la = torch.where(sums > 0, per_bucket, ha[:, None]).log_softmax(-1)
            a = _choose(la, greedy, generator)
            # second token: the completion of a remaining candidate has its score, anything else h_b
            cand = rem & (pfx == a[:, None])
            comp = torch.full((N, self.id_base), float("-inf")).scatter_reduce(1, sfx, torch.where(cand, s, neg), "amax")
            lb = torch.where(torch.isfinite(comp), comp, hb[:, None]).log_softmax(-1)
            b = _choose(lb, greedy, generator)
            hit = cand & (sfx == b[:, None])
            found = hit.any(-1)
            idx = hit.to(torch.int8).argmax(-1)
            order[:, t] = torch.where(found, idx, -1)
            rem[rows[found], idx[found]] = False
            first[:, t], second[:, t] = a, b
            lps[:, 2 * t] = la.gather(1, a[:, None]).squeeze(-1)
            lps[:, 2 * t + 1] = lb.gather(1, b[:, None]).squeeze(-1)
        return Rollouts(r, first, second, order, torch.cat([lp_reason, lps], 1))


_NEG = -1e30


def _choose(logp: torch.Tensor, greedy: bool, generator) -> torch.Tensor:
    """Argmax, or a sample by the Gumbel-max trick (one draw per row of ``logp (N, V)``)."""
    if greedy:
        return logp.argmax(-1)
    u = torch.rand(logp.shape, generator=generator).clamp_(min=1e-12)
    return (logp - torch.log(-torch.log(u))).argmax(-1)


def _log_add(x: torch.Tensor, log_count: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``log(e^x + count * e^h)`` with ``log_count = log(count)`` (-inf when count is 0)."""
    return torch.logaddexp(x, log_count + h)


def _slot_log_probs(s, ha, hb, pfx, sfx, rem, first, second, n_prefix: int, id_base: int):
    """Log-probs ``(N, T)`` of the written first / second id tokens at every slot (formulas in the
    module docstring), for scores ``s (N, K)``, remaining sets ``rem (N, T, K)``."""
    N, T, K = rem.shape
    neg = torch.tensor(_NEG, dtype=s.dtype)  # finite: an empty log-sum-exp must not give NaN gradients
    S = s[:, None, :].expand(N, T, K)
    onehot = (pfx[:, :, None] == torch.arange(n_prefix)[None, None, :]).to(s.dtype)  # (N, K, P)
    nonempty = (torch.bmm(rem.to(s.dtype), onehot) > 0).sum(-1)  # (N, T)
    log_empty = torch.log((n_prefix - nonempty).to(s.dtype))
    den_a = _log_add(torch.where(rem, S, neg).logsumexp(-1), log_empty, ha[:, None])
    in_a = rem & (pfx[:, None, :] == first[:, :, None])  # remaining candidates starting with a_t
    has_a = in_a.any(-1)
    num_a = torch.where(has_a, torch.where(in_a, S, neg).logsumexp(-1), ha[:, None].expand(N, T))
    n_a = in_a.sum(-1)
    den_b = _log_add(torch.where(in_a, S, neg).logsumexp(-1), torch.log((id_base - n_a).to(s.dtype)), hb[:, None])
    hit = in_a & (sfx[:, None, :] == second[:, :, None])
    num_b = torch.where(hit.any(-1), torch.where(hit, S, neg).logsumexp(-1), hb[:, None].expand(N, T))
    return num_a - den_a, num_b - den_b
