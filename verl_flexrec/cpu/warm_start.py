"""Warm-start a tiny random model so that some of its rollouts are valid FlexRec rankings.

A random-init model never closes ``<answer>``, so every rollout gets the format penalty, every
GRPO group has zero variance and every advantage is 0: the trainer runs but nothing is learnt.
A few steps of supervised fine-tuning on the training prompts fix that. Each prompt's target is
``<think>ok</think><answer>[p_1, ..., p_K]</answer><eos>`` with ``p`` one of ``n_orders``
seeded permutations of the prompt's candidate ids (a permutation per target, cycled over the
prompts), so sampling at temperature 1 yields different valid rankings (different NDCG, hence
non-zero advantages) and some malformed ones.

``lean`` > 0 draws the orders from a Plackett-Luce model instead, with weights ``exp(lean * g)``
for the candidates' gains ``g`` (Gumbel-top-K sampling): a policy that already leans towards the
better items, by a known amount, but still explores (``lean = 0``: uniform orders). RL then has a
representation of what matters to amplify, rather than to discover from scratch in a few dozen steps.

Loss: mean token cross-entropy over the target tokens only (prompt tokens are masked).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

THINK = "<think>ok</think>"


def ranking_target(order: Sequence[str]) -> str:
    """The response text for one ranking: ``<think>ok</think><answer>[a, b, ...]</answer>``."""
    return f"{THINK}<answer>[{', '.join(order)}]</answer>"


def seeded_orders(candidates: Sequence[str], n_orders: int, seed: int) -> list[list[str]]:
    """``n_orders`` permutations of ``candidates`` drawn with ``random.Random(seed)``."""
    rng = random.Random(seed)
    orders = []
    for _ in range(n_orders):
        order = list(candidates)
        rng.shuffle(order)
        orders.append(order)
    return orders


def plackett_luce_orders(candidates: Sequence[str], gains: Sequence[float], lean: float, n_orders: int,
                         seed: int) -> list[list[str]]:
    """``n_orders`` orders drawn from Plackett-Luce with weights ``exp(lean * gains)``.

    Gumbel-top-K: sorting ``lean * g + Gumbel noise`` descending draws the whole order at once,
    with P(item i next) = w_i / sum of the remaining w.
    """
    import numpy as np

    if len(gains) != len(candidates):
        raise ValueError(f"plackett_luce_orders: {len(candidates)} candidates but {len(gains)} gains")
    rng = np.random.default_rng(seed)
    scores = lean * np.asarray(gains, dtype=np.float64)
    return [[candidates[i] for i in np.argsort(-(scores + rng.gumbel(size=len(scores))), kind="stable")]
            for _ in range(n_orders)]


def build_examples(tokenizer, prompts: Sequence[list[dict]], candidates: Sequence[Sequence[str]],
                   n_orders: int = 2, seed: int = 0, vary_by_prompt: bool = False,
                   gains: Sequence[Sequence[float]] | None = None,
                   lean: float = 0.0) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per (prompt, order) pair; targets end with the EOS token.

    ``vary_by_prompt``: draw each prompt's orders with its own seed instead of applying the same
    shuffles to every prompt, so the targets carry no pattern of the prompt order (a maximally
    uncertain policy: every remaining candidate equally likely at every position).
    ``lean`` > 0 (needs ``gains``, one list per prompt): Plackett-Luce orders
    (:func:`plackett_luce_orders`), each prompt with its own seed.
    """
    if lean and gains is None:
        raise ValueError("build_examples: lean > 0 needs the candidates' gains")
    examples = []
    for n, (messages, cands) in enumerate(zip(prompts, candidates, strict=True)):
        prompt_ids = list(tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=False))
        row_seed = seed * 1_000_003 + n if vary_by_prompt or lean else seed
        orders = (plackett_luce_orders(cands, gains[n], lean, n_orders, row_seed) if lean
                  else seeded_orders(cands, n_orders, row_seed))
        for order in orders:
            target = tokenizer(ranking_target(order), add_special_tokens=False)["input_ids"]
            examples.append((prompt_ids, list(target) + [tokenizer.eos_token_id]))
    return examples


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask (prompts end where the targets begin)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def right_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the labels for them (-100 on padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(r)] = torch.tensor(r)
    return ids, labels


def target_loss(model, examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """Cross-entropy of the targets given their full prompts, with the prompts' KV cache detached.

    All prompt tokens but the last run once without gradients; the last prompt token and the
    ~40 target tokens run with gradients, attending to the cached keys/values. That is ~10x
    cheaper than back-propagating through 1k-token prompts, and the model still sees the
    full-length context it sees at rollout time. Token ``i`` of the second pass predicts target
    token ``i``.
    """
    prefix_ids, prefix_mask = left_pad([p[:-1] for p, _ in examples], pad_id)
    prefix_pos = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=prefix_pos,
                      use_cache=True).past_key_values
    tail_ids, tail_labels = right_pad([[p[-1]] + t for p, t in examples], pad_id)
    tail_mask = (tail_labels != -100).long()
    mask = torch.cat([prefix_mask, tail_mask], dim=1)
    positions = prefix_mask.sum(-1, keepdim=True) + torch.arange(tail_ids.shape[1]).unsqueeze(0)
    logits = model(input_ids=tail_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True).logits
    pred = logits[:, :-1].reshape(-1, logits.shape[-1])
    gold = tail_labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(pred, gold, ignore_index=-100)


def warm_start(model, tokenizer, prompts, candidates, *, steps: int = 300, lr: float = 3e-3,
               batch_size: int = 8, n_orders: int = 2, seed: int = 0, vary_by_prompt: bool = False,
               gains: Sequence[Sequence[float]] | None = None, lean: float = 0.0,
               progress: bool = True) -> list[float]:
    """Fine-tune ``model`` in place on the ranking targets; returns the loss of every step."""
    from tqdm import tqdm

    examples = build_examples(tokenizer, prompts, candidates, n_orders=n_orders, seed=seed,
                              vary_by_prompt=vary_by_prompt, gains=gains, lean=lean)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in tqdm(range(steps), desc="warm-start SFT", disable=not progress):
            loss = target_loss(model, rng.sample(examples, min(batch_size, len(examples))), tokenizer.pad_token_id)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def first_item_entropy(model, tokenizer, prompts: Sequence[list[dict]], batch_size: int = 16) -> float:
    """Mean entropy (nats) of the next-token distribution where the first ranked id is written.

    The prefix is the warm-start target up to ``<answer>[``. 0 means every rollout of a group
    starts alike (no exploration, zero group advantages); ``log K`` is a uniform pick of K ids.
    """
    prefix = tokenizer(f"{THINK}<answer>[", add_special_tokens=False)["input_ids"]
    rows = [list(tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=True,
                                               return_dict=False)) + list(prefix) for m in prompts]
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            ids, mask = left_pad(rows[start:start + batch_size], tokenizer.pad_token_id)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            total += float(-(logp.exp() * logp).sum(-1).sum())
    return total / max(len(rows), 1)
