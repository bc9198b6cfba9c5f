"""swap_item_rewards (O(K) closed form) against a brute force that literally swaps and recomputes NDCG.

The one implementation runs on numpy arrays (the reward manager's one list) and torch tensors
(batched): every reference test runs on both.
"""

import numpy as np
import pytest
import torch

from verl_flexrec.ranking import SWAP_MODES, swap_item_rewards

RNG = np.random.default_rng(1)
LIBRARIES = {"numpy": np.asarray, "torch": torch.as_tensor}


def _numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ndcg_np(g, cutoff=None, exponential=False):
    g = np.asarray(g, dtype=np.float64)
    t = np.exp2(g) - 1 if exponential else g
    d = 1.0 / np.log2(np.arange(2, len(g) + 2))
    if cutoff is not None:
        d[cutoff:] = 0.0
    ideal = np.sort(t)[::-1] @ d
    return 0.0 if ideal == 0 else float(t @ d / ideal)


def brute_force(gains, mode, cutoff=None, exponential=False):
    """Definition of each mode, computed the slow way."""
    g = list(map(float, gains))
    K = len(g)
    base = _ndcg_np(g, cutoff, exponential)
    t = np.exp2(g) - 1 if exponential else np.asarray(g)
    d = 1.0 / np.log2(np.arange(2, K + 2))
    if cutoff is not None:
        d[cutoff:] = 0.0
    ideal = np.sort(t)[::-1] @ d
    out = []
    for k in range(K):
        if mode in ("causal", "noncausal"):
            partners = range(k + 1, K) if mode == "causal" else [j for j in range(K) if j != k]
            deltas = []
            for j in partners:
                swapped = list(g)
                swapped[k], swapped[j] = swapped[j], swapped[k]
                deltas.append(base - _ndcg_np(swapped, cutoff, exponential))
            out.append(float(np.mean(deltas)) if deltas else 0.0)
        elif mode == "independent":
            out.append(0.0 if ideal == 0 else t[k] * d[k] / ideal)
        else:  # rank: DCG of positions k..K over IDCG
            out.append(0.0 if ideal == 0 else float(t[k:] @ d[k:] / ideal))
    return np.array(out)


def _cases():
    cases = []
    for _ in range(60):
        K = int(RNG.integers(1, 31))
        kind = RNG.integers(0, 4)
        if kind == 0:
            g = RNG.random(K) * 3  # continuous
        elif kind == 1:
            g = RNG.integers(0, 3, K).astype(float)  # many ties
        elif kind == 2:
            g = RNG.random(K) * (RNG.random(K) < 0.2)  # mostly zero gains
        else:
            g = np.zeros(K)  # IDCG = 0
        cases.append(g)
    cases.append(np.full(30, 2.0))  # all equal
    return cases


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("mode", SWAP_MODES)
@pytest.mark.parametrize("cutoff", [None, 1, 5, 10])
def test_matches_brute_force(mode, cutoff, library):
    worst = 0.0
    for g in _cases():
        ours = swap_item_rewards(LIBRARIES[library](g), mode, cutoff)
        assert type(ours) is type(LIBRARIES[library](g))  # numpy in, numpy out; torch in, torch out
        ours = _numpy(ours)
        ref = brute_force(g, mode, cutoff)
        worst = max(worst, float(np.max(np.abs(ours - ref))))
    assert worst < 1e-9, worst


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("mode", SWAP_MODES)
def test_exponential_gain_matches_brute_force(mode, library):
    for g in _cases()[:20]:
        ours = _numpy(swap_item_rewards(LIBRARIES[library](g), mode, gain="exponential"))
        np.testing.assert_allclose(ours, brute_force(g, mode, exponential=True), atol=1e-9)


def test_batched_leading_dims_and_dtype():
    g = torch.rand(4, 3, 30)
    out = swap_item_rewards(g)
    assert out.shape == g.shape and out.dtype == torch.float32
    flat = swap_item_rewards(g.reshape(-1, 30).double())
    torch.testing.assert_close(out.reshape(-1, 30).double(), flat, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", SWAP_MODES)
def test_numpy_one_list_equals_torch_batch(mode):
    """The reward manager's call (numpy, one list) and the batched call (torch) agree row by row."""
    lists = [g for g in _cases() if len(g) == 17] or [RNG.random(17) * 3]
    batch = torch.tensor(np.stack([RNG.integers(0, 4, 17).astype(float) for _ in range(32)]))
    batched = swap_item_rewards(batch, mode, 5).numpy()
    for row, want in zip(batch.numpy(), batched):
        np.testing.assert_allclose(swap_item_rewards(row, mode, 5), want, rtol=0, atol=1e-15)
    for g in lists:
        np.testing.assert_allclose(swap_item_rewards(g, mode), swap_item_rewards(torch.tensor(g), mode).numpy(), rtol=0, atol=1e-15)


def test_properties_of_the_causal_reward():
    g = torch.tensor([3.0, 2.0, 1.0, 0.0])
    r = swap_item_rewards(g)
    assert r[-1] == 0.0
    assert (r[:-1] > 0).all()  # an ideal ranking: every swap with a later item would lose NDCG
    assert (swap_item_rewards(g.flip(0))[:-1] < 0).all()  # the reversed ranking: every swap gains
    assert swap_item_rewards(torch.full((30,), 1.5, dtype=torch.float64)).abs().max() < 1e-12  # all ties


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="mode must be one of"):
        swap_item_rewards(torch.rand(5), "sampled")
