"""verl_flexrec.cpu.warm_start: the detached-prompt-cache loss equals the ordinary target loss."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from verl_flexrec.cpu.warm_start import (
    build_examples,
    plackett_luce_orders,
    ranking_target,
    seeded_orders,
    target_loss,
)
from verl_flexrec.parsing import parse_ranking
from verl_flexrec.testing import build_tiny_model, build_tiny_tokenizer


def _reference_loss(model, examples, pad_id):
    """Mean target-token cross-entropy, one full sequence at a time (no cache, no padding)."""
    total, count = 0.0, 0
    for prompt, target in examples:
        ids = torch.tensor([prompt + target])
        labels = torch.full_like(ids, -100)
        labels[0, len(prompt):] = torch.tensor(target)
        logits = model(input_ids=ids).logits[0, :-1]
        gold = labels[0, 1:]
        keep = gold != -100
        total += torch.nn.functional.cross_entropy(logits[keep], gold[keep], reduction="sum")
        count += int(keep.sum())
    return total / count


def test_target_loss_matches_full_sequence_loss_and_gradients_reach_the_model():
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=1)
    prompts = [[{"role": "user", "content": "rank 1 2 3 please"}], [{"role": "user", "content": "a much longer prompt " * 4}]]
    examples = build_examples(tok, prompts, [["1", "2", "3"], ["1", "2", "3"]], n_orders=2, seed=0)
    assert len(examples) == 4 and len({len(p) for p, _ in examples}) == 2  # left padding exercised
    loss = target_loss(model, examples, tok.pad_token_id)
    ref = _reference_loss(model, examples, tok.pad_token_id)
    assert torch.allclose(loss, ref, atol=1e-5), (float(loss), float(ref))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_targets_are_valid_rankings():
    orders = seeded_orders(["1", "2", "3", "4"], 3, seed=7)
    assert orders == seeded_orders(["1", "2", "3", "4"], 3, seed=7)
    for order in orders:
        parsed = parse_ranking(ranking_target(order), ["1", "2", "3", "4"])
        assert parsed.valid and list(parsed.order) == order


def _plackett_luce_probability(order, weights):
    """P(order) under Plackett-Luce, written out: each pick's weight over the weights still left."""
    left, p = list(range(len(weights))), 1.0
    for i in order:
        p *= weights[i] / sum(weights[j] for j in left)
        left.remove(i)
    return p


def test_plackett_luce_orders_follow_the_written_out_distribution():
    """Every one of the 24 orders of 4 items is drawn as often as Plackett-Luce says (chi-square)."""
    gains, lean, n = [5.0, 3.0, 1.0, 1.0], 0.4, 24_000
    cands = ["a", "b", "c", "d"]
    drawn = plackett_luce_orders(cands, gains, lean, n, seed=3)
    assert all(sorted(o) == cands for o in drawn)
    counts = {}
    for o in drawn:
        counts[tuple(o)] = counts.get(tuple(o), 0) + 1
    weights = np.exp(lean * np.asarray(gains))
    perms = list(itertools.permutations(range(4)))
    expected = np.array([_plackett_luce_probability(p, weights) for p in perms]) * n
    observed = np.array([counts.get(tuple(cands[i] for i in p), 0) for p in perms])
    assert expected.sum() == pytest.approx(n)
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_plackett_luce_lean_zero_is_uniform_and_a_large_lean_sorts_by_gain():
    cands = [str(i) for i in range(6)]
    gains = [1.0, 5.0, 3.0, 1.0, 4.0, 2.0]
    assert plackett_luce_orders(cands, gains, 50.0, 5, seed=0)[0][:4] == ["1", "4", "2", "5"]
    firsts = [o[0] for o in plackett_luce_orders(cands, gains, 0.0, 6000, seed=1)]
    counts = [firsts.count(c) for c in cands]
    assert stats.chisquare(counts).pvalue > 1e-3
    assert plackett_luce_orders(cands, gains, 0.4, 3, seed=9) == plackett_luce_orders(cands, gains, 0.4, 3, seed=9)
    with pytest.raises(ValueError, match="6 candidates but 2 gains"):
        plackett_luce_orders(cands, [1.0, 2.0], 0.4, 1, seed=0)


def test_build_examples_with_a_lean_needs_gains_and_draws_each_prompt_its_own_orders():
    tok = build_tiny_tokenizer()
    prompts = [[{"role": "user", "content": "rank"}]] * 2
    cands = [["1", "2", "3", "4"], ["1", "2", "3", "4"]]
    with pytest.raises(ValueError, match="needs the candidates' gains"):
        build_examples(tok, prompts, cands, lean=0.5)
    ex = build_examples(tok, prompts, cands, n_orders=8, seed=0, gains=[[1, 2, 3, 4]] * 2, lean=0.5)
    assert len(ex) == 16
    targets = [tok.decode(t[:-1]) for _, t in ex]
    assert targets[:8] != targets[8:]  # same prompt text, different seeds per prompt
    for text in targets:
        assert parse_ranking(text, ["1", "2", "3", "4"]).valid
