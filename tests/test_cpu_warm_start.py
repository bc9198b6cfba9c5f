"""verl_flexrec.cpu.warm_start: the detached-prompt-cache loss equals the ordinary target loss."""

import torch

from verl_flexrec.cpu.warm_start import (
    build_examples,
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
