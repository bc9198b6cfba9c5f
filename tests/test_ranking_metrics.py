"""ranking metrics vs pytrec_eval (trec_eval's C code) and ranx on the same judgements, on numpy
arrays and on torch tensors (one implementation, both array libraries)."""

import numpy as np
import pytest
import pytrec_eval
import torch
from ranx import Qrels, Run, evaluate

from verl_flexrec.ranking import dcg, mrr, ndcg, recall, top_n_relevant

RNG = np.random.default_rng(0)
LIBRARIES = {"numpy": np.asarray, "torch": torch.as_tensor}


def _random_lists(n_lists=200, max_k=30):
    """Integer gains (trec_eval/ranx read integer judgements) with many ties and zeros."""
    lists = []
    for _ in range(n_lists):
        k = int(RNG.integers(1, max_k + 1))
        lists.append(RNG.integers(0, 5, size=k).astype(np.float64) * (RNG.random(k) < 0.7))
    return lists


def _qrels_run(gains_ranked):
    docs = [f"d{i}" for i in range(len(gains_ranked))]
    qrels = {"q": {d: int(g) for d, g in zip(docs, gains_ranked)}}
    # strictly decreasing scores pin the order, so no tie-breaking rule is involved
    run = {"q": {d: float(len(docs) - i) for i, d in enumerate(docs)}}
    return qrels, run


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("k", [1, 5, 10, 30])
def test_ndcg_recall_mrr_match_pytrec_eval(k, library):
    to = LIBRARIES[library]
    worst = 0.0
    for gains in _random_lists():
        qrels, run = _qrels_run(gains)
        ref = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}", f"recall.{k}", "recip_rank"}).evaluate(run)["q"]
        ours_ndcg = float(ndcg(to(gains), k))
        rel = to(gains > 0)
        ours_recall = float(recall(rel, k))
        worst = max(worst, abs(ours_ndcg - ref[f"ndcg_cut_{k}"]), abs(ours_recall - ref[f"recall_{k}"]))
        # trec_eval's recip_rank has no cut-off: compare where the first hit is inside k
        first = int(np.argmax(gains > 0)) if (gains > 0).any() else None
        if first is not None and first < k:
            worst = max(worst, abs(float(mrr(rel, k)) - ref["recip_rank"]))
        elif first is not None:
            assert float(mrr(rel, k)) == 0.0
    assert worst < 1e-6, worst


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("k", [5, 10])
def test_ndcg_linear_and_exponential_match_ranx(k, library):
    to = LIBRARIES[library]
    lists = [g for g in _random_lists(120) if (g > 0).any()]
    qrels, run, ours_lin, ours_exp = {}, {}, [], []
    for i, gains in enumerate(lists):
        q, r = _qrels_run(gains)
        qrels[f"q{i:04d}"], run[f"q{i:04d}"] = q["q"], r["q"]  # ranx returns queries sorted by id
        ours_lin.append(float(ndcg(to(gains), k)))
        ours_exp.append(float(ndcg(to(gains), k, gain="exponential")))
    ref = evaluate(Qrels(qrels), Run(run), [f"ndcg@{k}", f"ndcg_burges@{k}", f"mrr@{k}"], return_mean=False)
    np.testing.assert_allclose(ours_lin, ref[f"ndcg@{k}"], atol=1e-6)
    np.testing.assert_allclose(ours_exp, ref[f"ndcg_burges@{k}"], atol=1e-6)
    ours_mrr = [float(mrr(to(g > 0), k)) for g in lists]
    np.testing.assert_allclose(ours_mrr, ref[f"mrr@{k}"], atol=1e-6)


def test_batched_equals_per_list_and_float_gains():
    g = torch.rand(64, 30, dtype=torch.float64) * 3
    batched = ndcg(g, 10)
    single = torch.stack([ndcg(row, 10) for row in g])
    torch.testing.assert_close(batched, single)
    # closed form for one list by hand
    row = g[0].numpy()
    d = 1 / np.log2(np.arange(2, 32))
    ideal = np.sort(row)[::-1]
    assert abs(float(ndcg(g[0], 10)) - (row[:10] @ d[:10]) / (ideal[:10] @ d[:10])) < 1e-12
    assert abs(float(dcg(g[0])) - row @ d) < 1e-12


def test_several_cutoffs_in_one_call_equal_one_call_each():
    for gains in _random_lists(50):
        for to in LIBRARIES.values():
            cuts = (None, 1, 5, 10, 40)
            together = np.asarray(ndcg(to(gains), cuts, gain="exponential"))
            each = [float(ndcg(to(gains), c, gain="exponential")) for c in cuts]
            np.testing.assert_allclose(together, each, rtol=0, atol=1e-15)
    batch = torch.rand(8, 12, dtype=torch.float64)
    assert ndcg(batch, (3, 5)).shape == (8, 2)
    assert ndcg(batch.numpy()[:, :0], (3, 5)).shape == (8, 2)  # empty lists: zeros, one per cut-off
    with pytest.raises(ValueError, match="cutoff"):
        ndcg(batch, (5, 0))


def test_numpy_and_torch_give_the_same_numbers_and_types():
    g = RNG.integers(0, 4, (16, 25)).astype(np.float64)
    t = torch.from_numpy(g)
    for fn in (lambda x: ndcg(x, 10), lambda x: dcg(x, 5, gain="exponential"), lambda x: top_n_relevant(x, 5)):
        a, b = fn(g), fn(t)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-15)
    rel = g > 1
    np.testing.assert_allclose(recall(rel, 5), recall(torch.from_numpy(rel), 5).numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(mrr(rel, 5), mrr(torch.from_numpy(rel), 5).numpy(), rtol=0, atol=0)
    assert ndcg(t.float(), 5).dtype == torch.float32 and ndcg(g.astype(np.float32), 5).dtype == np.float32
    assert isinstance(ndcg([3.0, 1.0, 2.0]), np.ndarray)  # lists are read as numpy


def test_torch_tensors_numpy_cannot_hold_sort_in_torch():
    """bfloat16 and tensors that need gradients take torch's own sort (no numpy round trip)."""
    g = torch.rand(6, 9, dtype=torch.float64) * 3
    torch.testing.assert_close(ndcg(g.bfloat16(), 5).double(), ndcg(g, 5), atol=2e-2, rtol=0)
    x = g.clone().requires_grad_(True)
    ndcg(x, 5).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_degenerate_lists_give_zero_not_nan():
    zeros = torch.zeros(3, 7)
    assert torch.equal(ndcg(zeros, 5), torch.zeros(3, dtype=zeros.dtype))
    assert torch.equal(recall(torch.zeros(3, 7, dtype=torch.bool), 5), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(mrr(torch.zeros(3, 7, dtype=torch.bool), 5), torch.zeros(3, dtype=torch.float64))
    one = torch.tensor([[2.0]])
    assert float(ndcg(one, 5)) == 1.0


def test_oracle_is_one_and_partial_list_uses_ideal_gains():
    g = torch.tensor([0.5, 3.0, 1.0, 0.0, 2.0])
    best = torch.sort(g, descending=True).values
    assert float(ndcg(best, 3)) == pytest.approx(1.0)
    assert float(ndcg(best[:2], None, ideal_gains=g)) < 1.0  # missing items cost DCG


def test_top_n_relevant_includes_boundary_ties_and_excludes_zero():
    g = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0, 0.0])
    assert top_n_relevant(g, 3).tolist() == [True, False, True, True, False, False]
    assert top_n_relevant(torch.zeros(4), 2).tolist() == [False] * 4
    assert top_n_relevant(torch.tensor([1.0, 0.0]), 5).tolist() == [True, False]
