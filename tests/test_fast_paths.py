"""The per-step hot paths against straightforward references (the previous implementations,
copied here) on hypothesis-generated inputs: token advantages (a broadcast and a sparse write of
the item tokens, from dense positions or from (row, token, k) triples), the estimator's input collation (one
np.frombuffer per array), the reward's one-list scores (numpy, several cut-offs per call) against
the batched torch calls one metric at a time, and token offsets from cached per-token pieces.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_token_windows import prefix_offsets  # the prefix-decoding reference (tests/ is on sys.path)

from verl_flexrec.advantage import flexrec_advantages, group_normalize
from verl_flexrec.config import AdvantageOptions, RewardOptions, UncertaintyOptions
from verl_flexrec.integration.item_data import (
    ITEM_REWARDS_KEY,
    ITEM_TOKENS_KEY,
    collate_flexrec_inputs,
    decode_item_rewards,
    decode_item_tokens,
    encode_item_data,
)
from verl_flexrec.parsing import format_answer, parse_ranking
from verl_flexrec.ranking import SWAP_MODES, mrr, ndcg, recall, swap_item_rewards, top_n_relevant
from verl_flexrec.reward import score_response
from verl_flexrec.schema import GroundTruth
from verl_flexrec.testing import build_tiny_tokenizer
from verl_flexrec.tokens import char_spans_to_token_spans, token_char_offsets
from verl_flexrec.uncertainty import group_ids, rollout_uncertainty, uncertainty_scale

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- references: the implementations these fast paths replaced -------------------------------
def _flat_group_stats(values, valid, cell, num_cells):
    """Mean and unbiased std of ``values[valid]`` per flat cell id (<2 values: mean 0, std 1)."""
    v = torch.where(valid, values, 0.0).to(torch.float64).reshape(-1)
    w = valid.to(torch.float64).reshape(-1)
    c = cell.reshape(-1)
    n = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, w)
    mean = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, v) / n.clamp(min=1)
    dev = (v - mean[c]) * w
    std = torch.sqrt(torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, dev * dev) / (n - 1).clamp(min=1))
    few = n < 2
    return mean.masked_fill(few, 0.0), std.masked_fill(few, 1.0)


def _flat_floored_std(std, have, cell, num_cells, K, floor):
    """max(std, floor * sigma_G) on cells with >= 2 values, sigma_G the RMS of the group's stds there."""
    n = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, cell.reshape(-1), have.to(torch.float64).reshape(-1))
    counted = n >= 2
    w = counted.to(torch.float64).view(-1, K)
    sigma = ((std.view(-1, K) ** 2 * w).sum(1) / w.sum(1).clamp(min=1)).sqrt().repeat_interleave(K)
    return torch.where(counted, torch.maximum(std, floor * sigma), std)


def reference_advantages(response_mask, index, seq_reward, item_rewards=None, item_token_pos=None, uncertainty=None, *, options=None, uncertainty_options=None, norm_by_std=True):
    """The float64 (bs, L) implementation of flexrec_advantages before the gather."""
    opts = options or AdvantageOptions()
    uopts = uncertainty_options or UncertaintyOptions()
    use_std = norm_by_std if opts.norm_by_std is None else opts.norm_by_std
    mask = response_mask.to(torch.float64)
    bs = mask.shape[0]
    gid = group_ids(index) if bs else torch.zeros(0, dtype=torch.long)
    seq = torch.as_tensor(seq_reward, dtype=torch.float64).reshape(bs)
    seq = torch.where(torch.isfinite(seq), seq, torch.zeros_like(seq))
    seq_adv = group_normalize(seq, gid, eps=opts.eps, norm_by_std=use_std)
    adv = seq_adv[:, None].expand_as(mask).clone()
    item_adv = torch.full((bs, 0), float("nan"), dtype=torch.float64)
    if opts.mode == "flexrec" and item_rewards is not None and item_token_pos is not None and bs:
        r = torch.as_tensor(item_rewards, dtype=torch.float64)
        K = r.shape[-1]
        have = torch.isfinite(r)
        if opts.item_norm == "pooled":
            cell, num_cells = gid[:, None].expand(bs, K), int(gid.max()) + 1
        else:
            cell, num_cells = gid[:, None] * K + torch.arange(K)[None, :], (int(gid.max()) + 1) * K
        mean, std = _flat_group_stats(r, have, cell, num_cells)
        if opts.item_norm == "position" and opts.item_std_floor > 0 and K:  # the std floor (tested in test_advantage)
            std = _flat_floored_std(std, have, cell, num_cells, K, opts.item_std_floor)
        centred = r - mean[cell]
        item_adv = centred if opts.item_norm == "none" or not use_std else centred / (std[cell] + opts.eps)
        item_adv = torch.where(have, item_adv, torch.full_like(item_adv, float("nan")))
        pos = torch.as_tensor(item_token_pos, dtype=torch.long)
        on_item = (pos >= 0) & (pos < K)
        gathered = torch.gather(item_adv, 1, pos.clamp(0, max(K - 1, 0))) if K else torch.zeros_like(mask)
        on_item &= torch.isfinite(gathered)
        adv = torch.where(on_item, gathered + (seq_adv[:, None] if opts.add_seq_adv_to_items else 0.0), adv)
    scale = torch.ones(bs, dtype=torch.float64)
    clipped = torch.zeros(bs, dtype=torch.bool)
    if uopts.enable and uncertainty is not None and bs:
        raw = uncertainty_scale(uncertainty, eps=uopts.eps, normalize=uopts.normalize, min_scale=0.0, max_scale=float("inf"), index=index)
        scale = raw.clamp(min=uopts.min_scale, max=uopts.max_scale)
        clipped = (raw < uopts.min_scale) | (raw > uopts.max_scale)
        adv = adv * scale[:, None]
    adv = adv * mask
    return adv.to(torch.float32), seq_adv.to(torch.float32), item_adv.to(torch.float32), scale.to(torch.float32), clipped


def reference_collate(infos):
    """collate_flexrec_inputs as a per-row loop over each row's own decoded arrays."""
    rows = [(decode_item_rewards(i), decode_item_tokens(i)) if i is not None else (np.zeros(0), np.zeros((0, 2))) for i in infos]
    bs = len(rows)
    k_max = max((len(r) for r, _ in rows), default=0)
    item_rewards = torch.full((bs, k_max), float("nan"), dtype=torch.float32)
    item_tokens = []
    for i, (r, tokens) in enumerate(rows):
        item_rewards[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        item_tokens += [(i, int(t), int(k)) for t, k in tokens]
    seq = torch.tensor([float("nan") if i is None else i["flexrec_seq_reward"] for i in infos], dtype=torch.float32)
    u = torch.tensor([0.0 if i is None else i["flexrec_uncertainty"] for i in infos], dtype=torch.float32)
    item_tokens = torch.tensor(item_tokens, dtype=torch.long).reshape(-1, 3)
    return {"item_rewards": item_rewards, "item_tokens": item_tokens, "seq_reward": seq, "uncertainty": u}


def dense_positions(item_tokens, bs, length):
    """(bs, L) item position of every token from (row, token, k) triples written in order (a
    later entry overwrites an earlier one), -1 elsewhere."""
    pos = torch.full((bs, length), -1, dtype=torch.long)
    for row, t, k in item_tokens.tolist():
        pos[row, t] = k
    return pos


def reference_list_scores(gains, ropts, uopts, var=None):
    """score_response's numbers from the batched functions on torch, one call per metric (the
    reward manager calls them on numpy, several cut-offs at once)."""
    g = torch.as_tensor(gains, dtype=torch.float64)
    relevant = top_n_relevant(g, 5)
    u = 0.0
    if var is not None:
        u = float(rollout_uncertainty(torch.as_tensor(var, dtype=torch.float64), g, weighting=uopts.weighting, cutoff=ropts.cutoff))
    return {
        "ndcg": float(ndcg(g, ropts.cutoff, gain=ropts.gain)),
        "items": swap_item_rewards(g, ropts.swap_mode, ropts.cutoff, gain=ropts.gain).tolist(),
        "uncertainty": u,
        "ndcg@5": float(ndcg(g, 5, gain=ropts.gain)),
        "ndcg@10": float(ndcg(g, 10, gain=ropts.gain)),
        "recall@5": float(recall(relevant, 5)),
        "mrr@5": float(mrr(relevant, 5)),
    }


def reference_offsets(tokenizer, ids, text):
    """Offsets by re-tokenising (when it reproduces the ids) else by prefix decoding."""
    special = set(tokenizer.all_special_ids)
    kept = [i for i, t in enumerate(ids) if t not in special]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == [ids[i] for i in kept]:
        it, out, prev = iter(enc["offset_mapping"]), [], 0
        for i in range(len(ids)):
            if i in kept:
                span = tuple(next(it))
                prev = span[1]
                out.append(span)
            else:
                out.append((prev, prev))
        return out
    return prefix_offsets(tokenizer, ids, text)


# -- strategies -------------------------------------------------------------------------------
@st.composite
def advantage_batches(draw):
    groups, n = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    bs, L, K = groups * n, draw(st.integers(1, 24)), draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if draw(st.booleans()):  # groups interleaved
        index = np.array([f"u{i % groups}" for i in rng.permutation(bs)], dtype=object)
    else:  # each group's rollouts in a row, as verl orders them (the estimator's (G, n, K) path)
        index = np.array([f"u{i // n}" for i in range(bs)], dtype=object)
    mask = (torch.arange(L)[None, :] < torch.as_tensor(rng.integers(0, L + 1, bs))[:, None]).float()
    seq = torch.as_tensor(rng.normal(size=bs), dtype=torch.float32)
    seq[torch.as_tensor(rng.random(bs) < 0.1)] = float("nan")
    items = torch.as_tensor(rng.choice([0.0, 0.5, 1.0, rng.normal()], size=(bs, K)), dtype=torch.float32)
    if draw(st.booleans()):  # invalid rollouts and short lists (else every rollout valid, full lists)
        items[torch.as_tensor(rng.random((bs, K)) < 0.2)] = float("nan")
    pos = torch.as_tensor(rng.integers(-3, K + 3, (bs, L)), dtype=torch.long)  # -1, other negatives, >= K
    # item tokens: sorted by (row, token) and unique, as collated, or in any order with repeats
    n_tokens = int(rng.integers(0, bs * L + 1)) if K else 0
    item_tokens = torch.stack([torch.as_tensor(rng.integers(0, hi, n_tokens)) for hi in (bs, L, max(K, 1))], 1).long()
    if draw(st.booleans()):
        item_tokens = torch.unique(item_tokens[:, :2], dim=0, return_inverse=False)
        item_tokens = torch.cat([item_tokens, torch.as_tensor(rng.integers(0, max(K, 1), len(item_tokens)))[:, None]], 1)
    u = torch.as_tensor(rng.choice([0.0, 0.01, 0.3], size=bs), dtype=torch.float32)
    opts = AdvantageOptions(
        mode=draw(st.sampled_from(["flexrec", "rec_r1"])),
        item_norm=draw(st.sampled_from(["position", "pooled", "none"])),
        add_seq_adv_to_items=draw(st.booleans()),
        norm_by_std=draw(st.sampled_from([None, True, False])),
        item_std_floor=draw(st.sampled_from([0.0, 0.1, 1.0])),
    )
    uopts = UncertaintyOptions(enable=draw(st.booleans()), normalize=draw(st.sampled_from(["batch", "group", "none"])))
    mask_dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.bool, torch.float64]))
    return mask.to(mask_dtype), index, seq, items, pos, item_tokens, (u if draw(st.booleans()) else None), opts, uopts, draw(st.booleans())


@SETTINGS
@given(advantage_batches())
def test_scattered_advantages_equal_the_float64_reference(batch):
    """Dense positions and item-token triples (the trainer's form) give the reference's values, bit
    for bit."""
    mask, index, seq, items, pos, item_tokens, u, opts, uopts, norm = batch
    kw = {"options": opts, "uncertainty_options": uopts, "norm_by_std": norm}
    ref_mask = mask.to(torch.float32)
    for dense, new in (
        (pos, flexrec_advantages(mask, index, seq, items, pos, u, **kw)),
        (dense_positions(item_tokens, *mask.shape), flexrec_advantages(mask, index, seq, items, None, u, item_tokens=item_tokens, **kw)),
    ):
        ref = reference_advantages(ref_mask, index, seq, items, dense, u, **kw)
        assert new.advantages.dtype == torch.float32 and new.advantages.shape == mask.shape
        assert torch.equal(new.advantages, ref[0])  # same float64 values, rounded once to float32
        for got, want in zip((new.seq_advantage, new.item_advantage, new.scale, new.clipped), ref[1:]):
            assert torch.equal(got, want) or torch.allclose(got, want, equal_nan=True, rtol=0, atol=0)


def test_scattered_advantages_without_item_inputs_and_empty_batch():
    mask = torch.ones(3, 5)
    out = flexrec_advantages(mask, ["a", "a", "b"], torch.tensor([1.0, 0.0, 2.0]))
    ref = reference_advantages(mask, ["a", "a", "b"], torch.tensor([1.0, 0.0, 2.0]))
    assert torch.equal(out.advantages, ref[0])
    empty = flexrec_advantages(torch.zeros(0, 4), [], torch.zeros(0), torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.long))
    assert empty.advantages.shape == (0, 4)
    empty = flexrec_advantages(torch.zeros(0, 4), [], torch.zeros(0), torch.zeros(0, 3), item_tokens=torch.zeros(0, 3))
    assert empty.advantages.shape == (0, 4)
    with pytest.raises(ValueError, match="item_tokens has shape"):
        flexrec_advantages(mask, ["a", "a", "b"], torch.zeros(3), torch.zeros(3, 2), item_tokens=torch.zeros(3, 2))
    for bad in ([[3, 0, 0]], [[0, 5, 0]], [[0, 0, 2]], [[0, -1, 0]]):  # row >= bs, token >= L, k >= K, negative
        with pytest.raises(ValueError, match="item_tokens must index"):
            flexrec_advantages(mask, ["a", "a", "b"], torch.zeros(3), torch.zeros(3, 2), item_tokens=torch.tensor(bad))


@st.composite
def extra_infos(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    L = draw(st.integers(0, 30))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["valid", "none", "invalid"]))
        if kind == "none":
            rows.append(None)
            continue
        K = 0 if kind == "invalid" else int(rng.integers(1, 7))
        rewards = rng.normal(size=K)
        # spans as the reward manager writes them (sorted, disjoint) or arbitrary: overlapping,
        # empty, reversed
        if draw(st.booleans()):
            starts = np.sort(rng.choice(L + 6, K, replace=False)) if K else np.zeros(0, int)
            spans = [(int(a), int(a) + int(rng.integers(0, 3))) for a in starts]
        else:
            spans = [(int(rng.integers(0, L + 4)), int(rng.integers(0, L + 6))) for _ in range(K)]
        rows.append({**encode_item_data(rewards, spans), "flexrec_seq_reward": float(rng.normal()), "flexrec_uncertainty": float(rng.uniform(0, 0.1))})
    return rows, L


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(), b.nan_to_num())


@SETTINGS
@given(extra_infos())
def test_vectorised_collation_equals_the_row_loop(case):
    infos, L = case
    new, ref = collate_flexrec_inputs(infos), reference_collate(infos)
    assert new.keys() == ref.keys()
    for key in ref:
        assert _same(new[key], ref[key]), key


def test_item_tokens_are_the_spans_written_in_order():
    """Each token of span k carries k; a token two spans share belongs to the later one."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        K = int(rng.integers(0, 6))
        spans = [(int(a), int(a) + int(w)) for a, w in zip(rng.integers(0, 12, K), rng.integers(-1, 4, K))]
        item_of = {}
        for k, (first, end) in enumerate(spans):
            for t in range(first, end):
                item_of[t] = k
        info = encode_item_data(np.zeros(K), spans)
        assert decode_item_tokens(info).tolist() == [list(p) for p in sorted(item_of.items())]
        assert info["flexrec_num_item_tokens"] == len(item_of)


def test_collation_refuses_item_data_that_does_not_match_its_count_by_row():
    good = {**encode_item_data([0.1, 0.2], [(1, 2), (3, 5)]), "flexrec_seq_reward": 0.0, "flexrec_uncertainty": 0.0}
    clipped = {**good, ITEM_REWARDS_KEY: good[ITEM_REWARDS_KEY][:-1]}  # what a numpy str array does to trailing NULs
    too_long = {**good, ITEM_TOKENS_KEY: good[ITEM_TOKENS_KEY] + "\x00" * 8}
    as_list = {**good, ITEM_REWARDS_KEY: [0.1, 0.2]}
    wide = {**good, ITEM_REWARDS_KEY: "\u20ac" * 8}  # not one byte per character
    for bad, key in ((clipped, ITEM_REWARDS_KEY), (too_long, ITEM_TOKENS_KEY), (as_list, ITEM_REWARDS_KEY), (wide, ITEM_REWARDS_KEY)):
        with pytest.raises(ValueError, match=f"row 2: {key}"):
            collate_flexrec_inputs([good, None, bad])
    # one reward too many in row 1 and one too few in row 2: the batch totals agree, the rows do not
    one = good[ITEM_REWARDS_KEY][:4]
    longer, shorter = {**good, ITEM_REWARDS_KEY: good[ITEM_REWARDS_KEY] + one}, {**good, ITEM_REWARDS_KEY: one}
    with pytest.raises(ValueError, match=f"row 1: {ITEM_REWARDS_KEY}"):
        collate_flexrec_inputs([good, longer, shorter])
    with pytest.raises(ValueError, match="2 item rewards but 1 token spans"):
        encode_item_data([0.1, 0.2], [(1, 2)])
    with pytest.raises(ValueError, match="must lie in"):
        encode_item_data([0.1], [(2**31 - 1, 2**31 + 1)])
    with pytest.raises(ValueError, match="must lie in"):
        encode_item_data([0.1], [(-2, 1)])


@SETTINGS
@given(
    st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, 3.0, 0.5, 1.7]), min_size=1, max_size=14),
    st.sampled_from(SWAP_MODES),
    st.sampled_from([None, 1, 3, 5, 10]),
    st.sampled_from(["linear", "exponential"]),
    st.sampled_from(["discount", "sum"]),
    st.booleans(),
)
def test_one_list_scores_equal_the_batched_torch_calls(gains, mode, cutoff, gain, weighting, with_var):
    K = len(gains)
    ids = [f"i{k}" for k in range(K)]
    var = [0.1 * (k % 3) for k in range(K)] if with_var else []
    gt = GroundTruth(candidates=ids, gains=gains, gain_var=var)
    perm = list(np.random.default_rng(K).permutation(K))
    ropts = RewardOptions(swap_mode=mode, cutoff=cutoff, gain=gain)
    uopts = UncertaintyOptions(weighting=weighting)
    got = score_response(format_answer([ids[i] for i in perm], "why"), gt, ropts, uopts)
    assert got.valid
    ranked = np.asarray(gains, dtype=np.float64)[perm]
    want = reference_list_scores(ranked, ropts, uopts, np.asarray(var)[perm] if with_var else None)
    assert math.isclose(got.ndcg, want["ndcg"], rel_tol=0, abs_tol=1e-12)
    assert math.isclose(got.score, ropts.format_bonus + want["ndcg"], rel_tol=0, abs_tol=1e-12)
    assert math.isclose(got.uncertainty, want["uncertainty"], rel_tol=1e-12, abs_tol=1e-12)
    np.testing.assert_allclose(got.item_rewards, want["items"], rtol=0, atol=1e-12)
    for key in ("ndcg@5", "ndcg@10", "recall@5", "mrr@5"):
        assert math.isclose(got.metrics[key], want[key], rel_tol=0, abs_tol=1e-12), key


# -- token offsets ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(Path(tmp_path_factory.mktemp("tok")))


WORDS = ["user", "likes", "comedy", "é", "日本", "  ", "\n", ",", "[", "7", "12", "v1429", "<think>", "</answer>", "ok!"]


@SETTINGS
@given(st.lists(st.sampled_from(WORDS), max_size=30), st.booleans(), st.booleans())
def test_offsets_from_cached_pieces_give_the_same_item_token_spans(tokenizer, words, split_digits, eos):
    ids = tokenizer.encode(" ".join(words), add_special_tokens=False)
    if split_digits:  # non-canonical tokenisation: each character as its own token where possible
        text = tokenizer.decode(ids)
        ids = [t for ch in text for t in tokenizer.encode(ch, add_special_tokens=False)]
    if eos:
        ids = ids + [tokenizer.eos_token_id]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    new, ref = token_char_offsets(tokenizer, ids, text), reference_offsets(tokenizer, ids, text)
    assert len(new) == len(ids)
    # every non-empty character span maps to the same tokens
    spans = [(a, b) for a in range(len(text)) for b in range(a + 1, min(len(text), a + 4) + 1)]
    for span in spans[::3]:
        assert char_spans_to_token_spans(new, [span]) == char_spans_to_token_spans(ref, [span]), span
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in ids]
    if "".join(pieces) == text:  # the pieces path: each token covers exactly its own decoded text
        ends = np.cumsum([len(p) for p in pieces]).tolist()
        assert new == list(zip([0, *ends[:-1]], ends))


def test_response_item_spans_identical_to_the_reference_offsets(tokenizer):
    ids_ = [str(i) for i in range(1, 31)]
    for seed in range(20):
        order = list(np.random.default_rng(seed).permutation(ids_))
        ids = tokenizer.encode(format_answer(order, "user likes comedy é 日本"), add_special_tokens=False) + [tokenizer.eos_token_id]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        spans = parse_ranking(text, ids_).spans
        assert char_spans_to_token_spans(token_char_offsets(tokenizer, ids, text), spans) == char_spans_to_token_spans(reference_offsets(tokenizer, ids, text), spans)


class _ListTokenizer:
    """A tokenizer written out: id -> text, id 0 is special ("<s>"). ``lead_space`` makes decoding
    one id alone differ from its piece in the joined text (as SentencePiece's leading-space rule
    does), so the cached-pieces path cannot apply."""

    PIECES = {0: "<s>", 1: "ab", 2: ",", 3: "c"}
    all_special_ids = [0]

    def __init__(self, lead_space=False):
        self.lead_space, self.calls, self.decodes = lead_space, 0, 0

    def decode(self, ids, skip_special_tokens=False):
        self.decodes += 1
        text = "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and i == 0))
        return (" " + text) if self.lead_space and len(ids) == 1 and text else text

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
        self.calls += 1
        ids, offsets, pos = [], [], 0
        while pos < len(text):
            i = next(i for i in (1, 2, 3) if text.startswith(self.PIECES[i], pos))
            ids.append(i)
            offsets.append((pos, pos + len(self.PIECES[i])))
            pos += len(self.PIECES[i])
        return {"input_ids": ids, "offset_mapping": offsets}


def test_cached_pieces_skip_special_tokens_and_call_no_tokenizer():
    tok = _ListTokenizer()
    ids = [1, 2, 3, 0]  # "ab,c" then a special token
    assert token_char_offsets(tok, ids, "ab,c") == [(0, 2), (2, 3), (3, 4), (4, 4)]
    assert tok.calls == 0  # the pieces (special ones decoded as "") joined are the text


def test_retokenised_offsets_give_special_tokens_the_empty_span_where_they_sit():
    tok = _ListTokenizer(lead_space=True)
    ids = [0, 1, 2, 3, 0]
    assert token_char_offsets(tok, ids, "ab,c") == [(0, 0), (0, 2), (2, 3), (3, 4), (4, 4)]
    # one re-tokenisation that reproduces the non-special ids, and no prefix decoding (O(L^2)):
    # the only decodes are the four ids' pieces, tried first
    assert tok.calls == 1 and tok.decodes == 4


def test_char_spans_to_token_spans_by_hand():
    offsets = [(0, 2), (2, 3), (3, 3), (3, 5)]
    assert char_spans_to_token_spans(offsets, [(0, 1), (2, 3), (4, 5)]) == [(0, 1), (1, 2), (3, 4)]
    assert char_spans_to_token_spans(offsets, [(1, 4)]) == [(0, 4)]  # every token overlapping [1, 4)
    assert char_spans_to_token_spans(offsets, [(6, 7)]) == [(4, 4)]  # past every token: empty, at the end
    assert char_spans_to_token_spans([], [(0, 1)]) == [(0, 0)]


@SETTINGS
@given(
    bs=st.integers(1, 12),
    length=st.integers(0, 40),
    seed=st.integers(0, 2**31 - 1),
    reject=st.floats(0.0, 1.0),
    corrupt=st.sampled_from(["none", "past", "swap"]),
    dtype=st.sampled_from([torch.float32, torch.int64, torch.bool]),
)
def test_alignment_check_equals_the_token_by_token_comparison(bs, length, seed, reject, corrupt, dtype):
    """FlexRecBatch.check_aligned's two-reduction screen finds exactly the rows whose mask is not
    their response prefix, and it raises exactly when some row marks a token past its response
    (the plain bs x L comparison), after rollout-correction-like rejections and misalignments."""
    from verl_flexrec.integration.handoff import FlexRecBatch, FlexRecBatchMismatch, rows_not_exactly_their_response

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, length + 1, bs)
    mask = (np.arange(length)[None, :] < lengths[:, None]) & (rng.random((bs, length)) >= reject * rng.random())
    short = np.flatnonzero(lengths < length)
    if corrupt == "past" and len(short):
        i = int(rng.choice(short))
        mask[i, int(rng.integers(lengths[i], length))] = True
    elif corrupt == "swap" and bs > 1:
        mask = mask[rng.permutation(bs)]
    full = torch.from_numpy(mask)
    prefix = torch.arange(length)[None, :] < torch.from_numpy(lengths)[:, None]
    expected_rows = torch.nonzero((full != prefix).any(1)).squeeze(1)
    assert torch.equal(rows_not_exactly_their_response(full.to(dtype), torch.from_numpy(lengths)), expected_rows)

    batch = FlexRecBatch(uids=["g"] * bs, infos=[None] * bs, response_lengths=lengths.tolist(), real=[True] * bs)
    marks_past = bool((full & ~prefix).any())
    if marks_past:
        with pytest.raises(FlexRecBatchMismatch, match=r"row \d+ .*marks token \d+"):
            batch.check_aligned(["g"] * bs, full.to(dtype))
    else:
        batch.check_aligned(["g"] * bs, full.to(dtype))
