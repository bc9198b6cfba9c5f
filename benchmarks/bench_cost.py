"""What FlexRec costs per step, as ratios against baselines timed in the same process.

    python benchmarks/bench_cost.py           # full sizes (several minutes, one CPU thread)
    python benchmarks/bench_cost.py --smoke   # seconds, small sizes, for CI

1. swap rewards, 4,096 lists x K=30: ``verl_flexrec.ranking.swap_item_rewards`` (O(K) suffix
   sums) vs a naive numpy loop that literally swaps every pair and recomputes NDCG, and vs the
   pairwise O(K^2) tensor form; max |difference| must be <= 1e-6.
2. advantage estimator, bs=1,024 x response length 1,024 (groups of 8, uuid prompt ids, K=30 ids
   of 1-2 tokens each), against verl's fastest built-in ``grpo_vectorized`` and its ``grpo``: the
   ``flexrec`` estimator on ready tensors (item tokens sparse, and dense positions), with only
   verl's 4 arguments (= GRPO), ``collate_flexrec_inputs`` (reward_extra_info -> tensors) and the
   trainer path: the estimator called with verl's 4 arguments while ``flexrec_sync``'s handoff
   provides the rollouts' reward_extra_info (alignment check and collation included); then the
   trainer path's stages, timed inside it in extra rounds of the same rotation.
3. reward manager, per sample: ``FlexRecRewardManager.run_single`` vs verl's
   ``NaiveRewardManager.run_single`` with a trivial score function, same responses and tokenizer;
   then each manager's stages timed one by one (µs per sample).
4. scaling: swap time vs K (10 ... 1000) and vs the number of lists; estimator vs batch size.

Timing: contenders run interleaved, round by round, so a change in machine load hits them alike,
and each call is read on two clocks: wall time, and CPU time (the calling thread's for the
estimator, which runs on one thread; the process's for the reward managers, as verl's naive
manager hands its work to executor threads). ``cost.json`` keeps, per contender, the wall median,
the CPU median and the CPU minimum, and ratios for each. Targets are judged on the CPU minimum,
the least disturbed run (timeit's advice): on a shared machine wall medians also count the time
slices the scheduler gives other processes, which hit long calls more often than short ones.

Prints tables; writes ``benchmarks/results/cost.json`` and ``cost_scaling.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo import core_algos

import verl_flexrec.register  # noqa: F401  (registers `flexrec` in verl's registries)
from verl_flexrec import advantage as advantage_module
from verl_flexrec.integration import estimator as estimator_module
from verl_flexrec.integration import handoff
from verl_flexrec.integration.estimator import estimator_options
from verl_flexrec.integration.item_data import collate_flexrec_inputs, encode_item_data
from verl_flexrec.parsing import format_answer
from verl_flexrec.ranking import swap_item_rewards
from verl_flexrec.schema import GroundTruth
from verl_flexrec.testing import build_tiny_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"swap_speedup_min": 2000.0, "swap_exact_atol": 1e-6, "trainer_path_vs_grpo_vectorized_max": 3.0, "reward_manager_vs_naive_max": 2.0}
STATS = ("cpu_min_s", "cpu_median_s", "wall_median_s")


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall seconds of each ``fns[name]()``, calls interleaved round by round."""
    return {name: v["wall_median_s"] for name, v in interleaved_stats(fns, repeats, warmup).items()}


def _stats(wall: list[float], cpu: list[float], per: int = 1) -> dict:
    return {"cpu_min_s": min(cpu) / per, "cpu_median_s": statistics.median(cpu) / per, "wall_median_s": statistics.median(wall) / per}


def interleaved_stats(fns: dict, repeats: int, warmup: int = 1, cpu_clock=time.thread_time) -> dict:
    """Wall median, CPU median and CPU minimum seconds of each ``fns[name]()``, the calls
    interleaved round by round (see the module docstring)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), cpu_clock()
            fn()
            cpu[name].append(cpu_clock() - c)
            wall[name].append(time.perf_counter() - w)
    return {name: _stats(wall[name], cpu[name]) for name in fns}


def ratios(stats: dict, names, base: str) -> dict:
    """``{name: {stat: stats[name][stat] / stats[base][stat]}}`` for every statistic."""
    return {name: {s.removesuffix("_s"): stats[name][s] / stats[base][s] for s in STATS} for name in names}


# -- 1. swap rewards --------------------------------------------------------------------------
def _ndcg_np(g: np.ndarray, d: np.ndarray) -> float:
    """NDCG of ranked gains ``g`` with discounts ``d``: DCG / DCG of the sorted list (0 if none)."""
    idcg = float(np.sort(g)[::-1] @ d)
    return float(g @ d) / idcg if idcg > 0 else 0.0


def naive_swap_rewards(gains: np.ndarray, causal: bool = True, hoist_idcg: bool = False) -> np.ndarray:
    """Literal definition: for each position k and each partner j (j > k when causal, else j != k),
    swap the two items, recompute the NDCG with numpy, and average the NDCG lost.
    ``hoist_idcg`` computes the (swap-invariant) ideal DCG once per list instead of per swap."""
    n, K = gains.shape
    d = 1.0 / np.log2(np.arange(2, K + 2))
    out = np.zeros((n, K))
    for row in range(n):
        g = gains[row]
        idcg = float(np.sort(g)[::-1] @ d)
        if idcg <= 0:
            continue
        base = _ndcg_np(g, d)
        for k in range(K):
            partners = range(k + 1, K) if causal else [j for j in range(K) if j != k]
            lost = []
            for j in partners:
                s = g.copy()
                s[k], s[j] = s[j], s[k]
                lost.append(base - (float(s @ d) / idcg if hoist_idcg else _ndcg_np(s, d)))
            out[row, k] = float(np.mean(lost)) if lost else 0.0
    return out


def pairwise_swap_rewards(gains: torch.Tensor) -> torch.Tensor:
    """Causal swap rewards from the full (K, K) matrix (g_k - g_j)(d_k - d_j) / IDCG, O(K^2)."""
    g = gains.to(torch.float64)
    K = g.shape[-1]
    d = 1.0 / torch.log2(torch.arange(2, K + 2, dtype=torch.float64))
    idcg = (torch.sort(g, -1, descending=True).values * d).sum(-1, keepdim=True)
    pair = (g[..., :, None] - g[..., None, :]) * (d[:, None] - d[None, :])
    later = torch.triu(torch.ones(K, K, dtype=torch.bool), 1)
    count = torch.arange(K - 1, -1, -1, dtype=torch.float64).clamp(min=1)
    r = (pair * later).sum(-1) / count / torch.where(idcg > 0, idcg, torch.ones_like(idcg))
    return torch.where(idcg > 0, r, torch.zeros_like(r))


def random_gains(n: int, K: int, seed: int = 0) -> np.ndarray:
    """Graded gains 0..3 (about a third zero), like thresholded interest."""
    rng = np.random.default_rng(seed)
    return np.maximum(0, rng.integers(-2, 4, (n, K))).astype(np.float64)


def bench_swap(n_lists: int, K: int, repeats: int, naive_repeats: int, exact_lists: int) -> dict:
    g = random_gains(n_lists, K)
    gt = torch.from_numpy(g)
    fast = interleaved_medians({"package": lambda: swap_item_rewards(gt, "causal"), "pairwise": lambda: pairwise_swap_rewards(gt)}, repeats)
    t_pkg_interleaved, t_pair = fast["package"], fast["pairwise"]
    # the headline speed-up times the package alone, as the naive loop is timed: interleaved with
    # the pairwise form's 30 MB temporaries it pays their cache eviction and fresh-page faults
    t_pkg = median_time(lambda: swap_item_rewards(gt, "causal"), repeats)
    ref = {}

    def run_naive():
        ref["causal"] = naive_swap_rewards(g, causal=True)

    t_naive = median_time(run_naive, naive_repeats, warmup=0)
    t_hoisted = median_time(lambda: naive_swap_rewards(g, hoist_idcg=True), 1, warmup=0)
    t_pkg_after = median_time(lambda: swap_item_rewards(gt, "causal"), repeats)  # load may have changed
    err_causal = float(np.abs(swap_item_rewards(gt, "causal").numpy() - ref["causal"]).max())
    err_pair = float(np.abs(pairwise_swap_rewards(gt).numpy() - ref["causal"]).max())
    sub = g[:exact_lists]
    err_noncausal = float(np.abs(swap_item_rewards(torch.from_numpy(sub), "noncausal").numpy() - naive_swap_rewards(sub, causal=False)).max())
    return {
        "n_lists": n_lists,
        "K": K,
        "package_s": t_pkg,
        "pairwise_s": t_pair,
        "package_after_naive_s": t_pkg_after,
        "package_interleaved_with_pairwise_s": t_pkg_interleaved,
        "speedup_vs_naive_interleaved_timing": t_naive / t_pkg_interleaved,
        "naive_s": t_naive,
        "naive_hoisted_idcg_s": t_hoisted,
        "speedup_vs_naive": t_naive / t_pkg,
        "speedup_vs_naive_hoisted_idcg": t_hoisted / t_pkg,
        "pairwise_speedup_vs_naive": t_naive / t_pair,
        "max_abs_err_causal": err_causal,
        "max_abs_err_pairwise": err_pair,
        "max_abs_err_noncausal": err_noncausal,
        "noncausal_checked_lists": len(sub),
    }


# -- 2. estimator -----------------------------------------------------------------------------
def estimator_batch(bs: int, L: int, K: int = 30, group: int = 8, seed: int = 0):
    """A batch shaped like FlexRec rollouts: reasoning tokens, then K ids of 1-2 tokens each."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(L // 3, L + 1, bs)
    mask = (torch.arange(L)[None, :] < torch.as_tensor(lengths)[:, None]).float()
    seq = torch.as_tensor(rng.normal(0.5, 0.3, bs), dtype=torch.float32)
    tlr = torch.zeros(bs, L)
    tlr[torch.arange(bs), torch.as_tensor(lengths - 1)] = seq
    # prompt uids as verl makes them (str(uuid.uuid4())), each repeated for its group's rollouts
    index = np.repeat([str(uuid.UUID(int=int(rng.integers(2**62)), version=4)) for _ in range(bs // group)], group).astype(object)
    gains = torch.from_numpy(random_gains(bs, K, seed + 1))
    item_rewards = swap_item_rewards(gains).to(torch.float32)
    pos = torch.full((bs, L), -1, dtype=torch.long)
    spans = []
    for i, n in enumerate(lengths):
        width = rng.integers(1, 3, K)  # tokens per id
        end = int(n) - 2  # "]</answer>" closes the response
        starts = end - np.cumsum((width + 1)[::-1])[::-1]  # ", " separator token between ids
        row = []
        for k in range(K):
            a = max(0, int(starts[k]))
            pos[i, a : a + int(width[k])] = k
            row.append([a, a + int(width[k])])
        spans.append(row)
    infos = [
        {
            **encode_item_data(item_rewards[i].numpy(), spans[i]),
            "flexrec_seq_reward": float(seq[i]),
            "flexrec_uncertainty": float(rng.uniform(0, 0.02)),
        }
        for i in range(bs)
    ]
    kwargs = {
        "item_rewards": item_rewards,
        "item_tokens": torch.tensor([(i, t, k) for i, row in enumerate(spans) for k, (a, b) in enumerate(row) for t in range(a, b)]),
        "seq_reward": seq,
        "uncertainty": torch.as_tensor([x["flexrec_uncertainty"] for x in infos]),
    }
    return tlr, mask, index, kwargs, infos, pos


def bench_estimator(bs: int, L: int, repeats: int) -> dict:
    tlr, mask, index, kwargs, infos, pos = estimator_batch(bs, L)
    dense = {**{k: v for k, v in kwargs.items() if k != "item_tokens"}, "item_token_pos": pos}
    cfg = OmegaConf.create({"adv_estimator": "flexrec", "norm_adv_by_std_in_grpo": True, "flexrec": {}})
    grpo = core_algos.get_adv_estimator_fn("grpo")
    grpo_vec = core_algos.get_adv_estimator_fn("grpo_vectorized")
    flex = core_algos.get_adv_estimator_fn("flexrec")
    lengths = mask.sum(-1).long().tolist()
    options = (cfg, *estimator_options(cfg))  # flexrec_sync reads the algorithm config once per run

    def trainer_path():
        """What flexrec_sync runs per step: the estimator called with verl's 4 arguments while the
        trainer provides the rollouts' reward_extra_info, collated inside the estimator."""
        batch = handoff.FlexRecBatch(uids=list(index), infos=infos, response_lengths=lengths, real=[True] * bs, options=options)
        with handoff.provide(batch):
            return flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg)

    contenders = {
        "grpo_vectorized": lambda: grpo_vec(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg),
        "grpo": lambda: grpo(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg),
        "standard_args": lambda: flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg),
        "items": lambda: flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg, **kwargs),
        "items_dense": lambda: flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg, **dense),
        "collate": lambda: collate_flexrec_inputs(infos),
        "trainer_path": trainer_path,
    }
    t = interleaved_stats(contenders, repeats)
    stages = profile_trainer_path(contenders, max(3, repeats // 2))
    a_grpo, _ = grpo(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg)
    a_vec, _ = grpo_vec(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg)
    a_plain, _ = flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg)
    a_items, _ = flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg, **kwargs)
    a_dense, _ = flex(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg, **dense)
    collated = collate_flexrec_inputs(infos)
    others = [n for n in contenders if n not in ("grpo_vectorized", "grpo")]
    return {
        "bs": bs,
        "response_length": L,
        "times": t,
        "trainer_path_stages_us": stages,
        "vs_grpo_vectorized": ratios(t, ["grpo", *others], "grpo_vectorized"),
        "vs_grpo": ratios(t, others, "grpo"),
        "standard_args_equal_grpo": bool(torch.equal(a_grpo, a_plain)),
        "grpo_vectorized_close_to_grpo": bool(torch.allclose(a_vec, a_grpo, atol=1e-5, rtol=0)),
        "trainer_path_equals_direct_items": bool(torch.equal(trainer_path()[0], a_items)),
        "dense_positions_equal_item_tokens": bool(torch.equal(a_dense, a_items)),
        "collate_matches_direct_inputs": bool(
            torch.equal(collated["item_tokens"], kwargs["item_tokens"]) and torch.equal(collated["item_rewards"], kwargs["item_rewards"])
        ),
    }


# Stages of the trainer path, timed inside it: (owner, attribute) of the function each one calls.
TRAINER_PATH_STAGES = {
    "alignment check (uids, response_mask screen)": (handoff.FlexRecBatch, "check_aligned"),
    "collation": (estimator_module, "collate_flexrec_inputs"),
    "item tokens inside their response": (estimator_module, "_check_item_tokens_in_response"),
    "estimator math (flexrec_advantages)": (estimator_module, "flexrec_advantages"),
    "  group ids": (advantage_module, "group_ids_array"),
    "  sequence GRPO": (advantage_module, "_group_normalize"),
    "  uncertainty scale": (advantage_module, "scale_array"),
    "  item statistics": (advantage_module, "_item_advantages"),
    "  item-token cells": (advantage_module, "_cells_from_item_tokens"),
}


def profile_trainer_path(contenders: dict, repeats: int) -> dict:
    """CPU µs (min, median) of each stage in ``TRAINER_PATH_STAGES`` while ``contenders
    ["trainer_path"]`` runs, in the same rotation as the timing (so caches are as cold as there):
    each stage function is wrapped with a thread-CPU timer for these extra rounds only. The
    indented stages are part of "estimator math"; the rest of the total is the sequence-reward
    sum, the broadcast and sparse write, and bookkeeping."""
    record, active, originals = {name: [] for name in TRAINER_PATH_STAGES}, [False], []
    record["trainer path (instrumented)"] = []
    for name, (owner, attribute) in TRAINER_PATH_STAGES.items():
        fn = getattr(owner, attribute)

        def timed(*args, _fn=fn, _name=name, **kwargs):
            if not active[0]:
                return _fn(*args, **kwargs)
            c = time.thread_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                record[_name].append(time.thread_time() - c)

        originals.append((owner, attribute, fn))
        setattr(owner, attribute, timed)

    def instrumented():
        active[0] = True
        c = time.thread_time()
        try:
            contenders["trainer_path"]()
        finally:
            active[0] = False
            record["trainer path (instrumented)"].append(time.thread_time() - c)

    try:
        interleaved_stats({**contenders, "trainer_path": instrumented}, repeats)
    finally:
        for owner, attribute, fn in originals:
            setattr(owner, attribute, fn)
    return {name: {"cpu_min_us": min(v) * 1e6, "cpu_median_us": statistics.median(v) * 1e6} for name, v in record.items() if v}


def bench_trainer_fetch(bs: int, L: int, repeats: int) -> dict:
    """``flexrec_sync``'s per-step read of the rollouts' reward_extra_info (uid and extra_fields of
    every row, in the types TransferQueue's storage returns: NonTensorStacks; response lengths
    come from the keys' tags), from the fetched TensorDict to the handoff batch; the transfer
    itself and verl's own reads are excluded. Not part of the trainer-path target (collation +
    estimator)."""
    from unittest.mock import patch

    import transfer_queue as tq
    from tensordict import TensorDict
    from transfer_queue import KVBatchMeta
    from transfer_queue.storage.managers.simple_storage_manager import AsyncSimpleStorageManager

    from verl_flexrec.integration.trainer import FlexRecTrainerSync
    from verl_flexrec.provenance import PLUGIN_KEY, plugin_stamp

    _, mask, index, _, infos, _ = estimator_batch(bs, L)
    keys = [f"{u}_{i % 8}_0" for i, u in enumerate(index)]
    scalars = {"flexrec_valid": 1.0, "flexrec_error": "", "flexrec_ndcg": 0.5, "ndcg@5": 0.5, "ndcg@10": 0.5, "recall@5": 0.5, "mrr@5": 0.5}
    pack = AsyncSimpleStorageManager._pack_field_values
    fields = {
        "uid": pack([str(u) for u in index]),
        "extra_fields": pack([{"reward_extra_info": {**scalars, **info, PLUGIN_KEY: plugin_stamp()}} for info in infos]),
    }
    fetched = [TensorDict(dict(fields), batch_size=[bs]) for _ in range(repeats + 1)]  # the trainer pops fields
    trainer = FlexRecTrainerSync.__new__(FlexRecTrainerSync)
    trainer.config = OmegaConf.create({"algorithm": {"adv_estimator": "flexrec"}})
    batch = KVBatchMeta(keys=keys, tags=[{"response_len": int(n)} for n in mask.sum(-1)], partition_id="train")
    wall, cpu = [], []
    with patch.object(tq, "kv_batch_get", lambda **_: fetched.pop()):
        trainer._fetch_flexrec_batch(batch)
        for _ in range(repeats):
            w, c = time.perf_counter(), time.thread_time()
            provided = trainer._fetch_flexrec_batch(batch)
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - w)
    assert provided.response_lengths == mask.sum(-1).long().tolist() and all(i is not None for i in provided.infos)
    return _stats(wall, cpu)


# -- 3. reward manager ------------------------------------------------------------------------
def reward_manager_inputs(tokenizer, n: int, K: int = 30, reasoning_words: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in range(1, K + 1)]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "rank these"}], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"]) if hasattr(prompt, "keys") else list(prompt)
    words = ["user", "likes", "comedy", "so", "item", "goes", "first", "then", "drama", "and", "news"]
    out = []
    for _ in range(n):
        gains = [float(x) for x in rng.integers(0, 4, K)]
        gt = GroundTruth(candidates=ids, gains=gains).to_dict()
        reasoning = " ".join(rng.choice(words, reasoning_words))
        text = format_answer(list(rng.permutation(ids)), reasoning)
        resp = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        batch = {
            "prompts": torch.tensor([prompt]),
            "responses": torch.tensor([resp]),
            "attention_mask": torch.ones(1, len(prompt) + len(resp), dtype=torch.long),
            "input_ids": torch.tensor([prompt + resp]),
            "position_ids": torch.arange(len(prompt) + len(resp))[None],
        }
        non_tensor = {
            "data_source": np.array(["flexrec/bench"], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": gt}], dtype=object),
            "extra_info": np.array([{"split": "train", "index": 0}], dtype=object),
        }
        out.append(DataProto.from_dict(tensors=batch, non_tensors=non_tensor))
    return out


def trivial_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return 0.0


def bench_reward_manager(n: int, repeats: int) -> dict:
    """Per-sample time of each manager's ``run_single`` over the same ``n`` responses."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tiny_tokenizer(Path(tmp) / "tok")
        data = reward_manager_inputs(tokenizer, n)
        config = OmegaConf.create({"algorithm": {"flexrec": {}}, "actor_rollout_ref": {"rollout": {"response_length": 1024}}})

        async def run_all(manager):
            for d in data:
                await manager.run_single(d)

        async def time_both():
            # built inside the running loop: verl's naive manager keeps the loop it was made in
            managers = {
                "naive": get_reward_manager_cls("naive")(config=config, tokenizer=tokenizer, compute_score=trivial_score),
                "flexrec": get_reward_manager_cls("flexrec")(config=config, tokenizer=tokenizer, compute_score=None),
            }
            wall, cpu = {k: [] for k in managers}, {k: [] for k in managers}
            for m in managers.values():
                await run_all(m)  # warm-up (and the executor's threads)
            for _ in range(repeats):  # interleaved, so drift in machine load hits both
                for name, m in managers.items():
                    w, c = time.perf_counter(), time.process_time()
                    await run_all(m)
                    cpu[name].append(time.process_time() - c)
                    wall[name].append(time.perf_counter() - w)
            ok = (await managers["flexrec"].run_single(data[0]))["reward_extra_info"]["flexrec_valid"] == 1.0
            return {k: _stats(wall[k], cpu[k], per=n) for k in managers}, ok

        t, valid = asyncio.run(time_both())
        lengths = [int(d.batch["responses"].shape[-1]) for d in data]
    return {
        "samples": n,
        "mean_response_tokens": float(np.mean(lengths)),
        "times_per_sample": t,
        "flexrec_vs_naive": ratios(t, ["flexrec"], "naive")["flexrec"],
        "flexrec_output_valid": bool(valid),
    }


def _executor_hop_s(n: int = 2000) -> float:
    """CPU seconds of one ``await loop.run_in_executor(None, no-op)`` (both threads), the hand-off
    verl's naive manager makes twice per sample (decode, score)."""

    async def hops():
        loop = asyncio.get_running_loop()
        for _ in range(50):  # start the executor's threads
            await loop.run_in_executor(None, lambda: None)
        c = time.process_time()
        for _ in range(n):
            await loop.run_in_executor(None, lambda: None)
        return (time.process_time() - c) / n

    return min(asyncio.run(hops()) for _ in range(5))


def profile_reward_managers(n: int = 64, repeats: int = 9) -> dict:
    """Where each manager's per-sample CPU time goes, µs per sample (minimum of ``repeats`` runs
    over ``n`` samples, each stage on its own).

    naive: index the DataProto, valid length, decode, a trivial score, two executor hops.
    flexrec (inline, no hop): the same index, valid length and decode, plus what FlexRec computes
    from the text: the ground-truth record, parse_ranking, the ranking math (NDCG reward, swap
    item rewards, NDCG@5/10, Recall@5, MRR@5), token offsets and item token spans, and the
    binary item data verl carries in reward_extra_info.
    """
    from verl_flexrec.integration.reward_manager import FlexRecRewardManager
    from verl_flexrec.parsing import parse_ranking
    from verl_flexrec.reward import _list_scores, score_response
    from verl_flexrec.tokens import char_spans_to_token_spans, token_char_offsets

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tiny_tokenizer(Path(tmp) / "tok")
        data = reward_manager_inputs(tokenizer, n, seed=1)
        mgr = FlexRecRewardManager(OmegaConf.create({"algorithm": {"flexrec": {}}}), tokenizer)
        items = [d[len(d) - 1] for d in data]

        def valid_ids(it):
            r = it.batch["responses"]
            return r[: int(it.batch["attention_mask"][-r.shape[-1] :].sum())]

        ids = [valid_ids(it) for it in items]
        gts = [GroundTruth.from_any(d.non_tensor_batch["reward_model"][0]["ground_truth"]) for d in data]
        texts = [tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        lists = [x.tolist() for x in ids]
        results = [score_response(t, g, mgr.flexrec.reward, mgr.flexrec.uncertainty) for t, g in zip(texts, gts)]
        gains = [g.gains_array()[[g.index_of()[c] for c in parse_ranking(t, g.candidates).order]] for t, g in zip(texts, gts)]
        offsets = [token_char_offsets(tokenizer, x, t) for x, t in zip(lists, texts)]
        spans = [char_spans_to_token_spans(o, r.item_char_spans) for o, r in zip(offsets, results)]
        assert all(r.valid for r in results)
        stages = {
            "index DataProto": lambda: [d[len(d) - 1] for d in data],
            "valid length": lambda: [valid_ids(it) for it in items],
            "decode": lambda: [tokenizer.decode(x, skip_special_tokens=True) for x in ids],
            "trivial score function": lambda: [trivial_score("s", t, None) for t in texts],
            "ground truth record": lambda: [GroundTruth.from_any(d.non_tensor_batch["reward_model"][0]["ground_truth"]) for d in data],
            "parse_ranking": lambda: [parse_ranking(t, g.candidates) for t, g in zip(texts, gts)],
            "ranking math": lambda: [_list_scores(g, mgr.flexrec.reward) for g in gains],
            "token offsets": lambda: [token_char_offsets(tokenizer, x, t) for x, t in zip(lists, texts)],
            "item token spans": lambda: [char_spans_to_token_spans(o, r.item_char_spans) for o, r in zip(offsets, results)],
            "item data encoding": lambda: [encode_item_data(r.item_rewards, s) for r, s in zip(results, spans)],
            "score_text total": lambda: [mgr.score_text(x, g) for x, g in zip(ids, gts)],
        }
        us = {}
        for name, f in stages.items():
            f()
            times = []
            for _ in range(repeats):
                c = time.process_time()
                f()
                times.append(time.process_time() - c)
            us[name] = min(times) / n * 1e6
    hop = _executor_hop_s() * 1e6
    common = ("index DataProto", "valid length", "decode")
    naive = {**{k: us[k] for k in common}, "trivial score function": us["trivial score function"], "executor hops (2)": 2 * hop}
    flex = {k: us[k] for k in common + ("ground truth record", "parse_ranking", "ranking math", "token offsets", "item token spans", "item data encoding")}
    return {
        "executor_hop_us": hop,
        "naive_stages_us": naive,
        "flexrec_stages_us": flex,
        "naive_sum_us": sum(naive.values()),
        "flexrec_sum_us": sum(flex.values()),
        "stage_sum_ratio": sum(flex.values()) / sum(naive.values()),
        "score_text_total_us": us["score_text total"],
    }


# -- 4. scaling -------------------------------------------------------------------------------
def bench_scaling(Ks, batch_sizes, est_batch_sizes, L: int, repeats: int, naive_lists: int, k_lists: int = 4096) -> dict:
    out = {"swap_vs_K": [], "swap_vs_lists": [], "estimator_vs_bs": []}
    for K in tqdm(Ks, desc="swap vs K", leave=False):
        g = torch.from_numpy(random_gains(k_lists, K, K))
        row = {"K": K, "n_lists": k_lists, "package_s": median_time(lambda g=g: swap_item_rewards(g, "causal"), repeats)}
        if K <= 100:
            row["pairwise_s"] = median_time(lambda g=g: pairwise_swap_rewards(g), repeats)
            sub = g[:naive_lists].numpy()
            row["naive_per_list_s"] = median_time(lambda sub=sub: naive_swap_rewards(sub), 1, warmup=0) / naive_lists
        out["swap_vs_K"].append(row)
    for n in tqdm(batch_sizes, desc="swap vs lists", leave=False):
        g = torch.from_numpy(random_gains(n, 30, n))
        out["swap_vs_lists"].append({"n_lists": n, "K": 30, "package_s": median_time(lambda g=g: swap_item_rewards(g, "causal"), repeats)})
    for bs in tqdm(est_batch_sizes, desc="estimator vs bs", leave=False):
        r = bench_estimator(bs, L, repeats)
        out["estimator_vs_bs"].append(
            {"bs": bs, "response_length": L, **{name: r["times"][name]["cpu_min_s"] for name in ("grpo_vectorized", "grpo", "items", "trainer_path")}}
        )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scaling"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    rows = sc["swap_vs_K"]
    K = np.array([r["K"] for r in rows])
    ax.loglog(K, [r["package_s"] / r["n_lists"] * 1e6 for r in rows], "o-", label="package (suffix sums, O(K))")
    kp = [r for r in rows if "pairwise_s" in r]
    ax.loglog([r["K"] for r in kp], [r["pairwise_s"] / r["n_lists"] * 1e6 for r in kp], "s-", label="pairwise tensor (O(K²))")
    ax.loglog([r["K"] for r in kp], [r["naive_per_list_s"] * 1e6 for r in kp], "^-", label="naive numpy swaps")
    ax.set_xlabel("K (items per list)")
    ax.set_ylabel("µs per list")
    ax.set_title(f"causal swap rewards: cost per list vs K ({rows[0]['n_lists']:,} lists)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    rows = sc["swap_vs_lists"]
    ax.loglog([r["n_lists"] for r in rows], [r["package_s"] * 1e3 for r in rows], "o-")
    ax.set_xlabel("lists (K=30)")
    ax.set_ylabel("ms per call")
    ax.set_title("swap_item_rewards vs number of lists")
    ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    rows = sc["estimator_vs_bs"]
    bs = [r["bs"] for r in rows]
    for key, style, label in (
        ("grpo_vectorized", "o-", "verl grpo_vectorized"),
        ("grpo", "o:", "verl grpo"),
        ("items", "s-", "flexrec on ready tensors"),
        ("trainer_path", "^--", "flexrec trainer path (collation included)"),
    ):
        ax.loglog(bs, [r[key] * 1e3 for r in rows], style, label=label)
    ax.set_xlabel(f"batch size (response length {rows[0]['response_length']})")
    ax.set_ylabel("ms per call (CPU, minimum)")
    ax.set_title("advantage estimator vs batch size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(r: dict) -> None:
    s, e, m = r["swap"], r["estimator"], r["reward_manager"]
    print(f"\n1. swap rewards, {s['n_lists']} lists x K={s['K']} (median of repeats)")
    print(f"   package (suffix sums)  {s['package_s'] * 1e3:10.2f} ms   {s['speedup_vs_naive']:9.0f}x vs naive   max|err| {s['max_abs_err_causal']:.1e}")
    print(f"   ″ timed after naive    {s['package_after_naive_s'] * 1e3:10.2f} ms; interleaved with pairwise {s['package_interleaved_with_pairwise_s'] * 1e3:.2f} ms "
          f"({s['speedup_vs_naive_interleaved_timing']:.0f}x)")
    print(f"   pairwise O(K^2) tensor {s['pairwise_s'] * 1e3:10.2f} ms   {s['pairwise_speedup_vs_naive']:9.0f}x vs naive   max|err| {s['max_abs_err_pairwise']:.1e}")
    print(f"   naive numpy swaps      {s['naive_s'] * 1e3:10.2f} ms   (NDCG recomputed per swap; noncausal max|err| {s['max_abs_err_noncausal']:.1e} on {s['noncausal_checked_lists']} lists)")
    print(f"   naive, IDCG hoisted    {s['naive_hoisted_idcg_s'] * 1e3:10.2f} ms   package {s['speedup_vs_naive_hoisted_idcg']:.0f}x faster")
    print(f"\n2. advantage estimator, bs={e['bs']} x L={e['response_length']}: ms (CPU min / CPU median / wall median) and x grpo_vectorized")
    for name, label in (
        ("grpo_vectorized", "verl grpo_vectorized"),
        ("grpo", "verl grpo"),
        ("standard_args", "flexrec, verl's 4 arguments"),
        ("items", "flexrec, ready tensors (sparse)"),
        ("items_dense", "flexrec, ready tensors (dense)"),
        ("collate", "collate_flexrec_inputs"),
        ("trainer_path", "trainer path (flexrec_sync)"),
    ):
        t = e["times"][name]
        x = e["vs_grpo_vectorized"].get(name, {"cpu_min": 1.0, "cpu_median": 1.0, "wall_median": 1.0})
        print(f"   {label:33s} {t['cpu_min_s'] * 1e3:6.2f} / {t['cpu_median_s'] * 1e3:6.2f} / {t['wall_median_s'] * 1e3:6.2f} ms   "
              f"{x['cpu_min']:5.2f}x / {x['cpu_median']:5.2f}x / {x['wall_median']:5.2f}x")
    print("   trainer path stages, µs (CPU min / median, timed inside it in extra rounds of the same rotation):")
    for name, v in e["trainer_path_stages_us"].items():
        print(f"     {name:45s} {v['cpu_min_us']:7.0f} / {v['cpu_median_us']:7.0f}")
    f, fx = e["trainer_fetch"]["times"], e["trainer_fetch"]["vs_grpo_vectorized"]
    print(f"   {'(trainer fetch of extra_fields)':33s} {f['cpu_min_s'] * 1e3:6.2f} / {f['cpu_median_s'] * 1e3:6.2f} / {f['wall_median_s'] * 1e3:6.2f} ms   "
          f"{fx['cpu_min']:5.2f}x / {fx['cpu_median']:5.2f}x / {fx['wall_median']:5.2f}x   (outside the target)")
    print(f"   identical outputs: 4 args = grpo {e['standard_args_equal_grpo']}, trainer path = ready tensors {e['trainer_path_equals_direct_items']}, "
          f"dense = sparse {e['dense_positions_equal_item_tokens']}, collation = direct inputs {e['collate_matches_direct_inputs']}")
    print(f"\n3. reward manager per sample ({m['samples']} responses, {m['mean_response_tokens']:.0f} tokens avg): µs (CPU min / CPU median / wall median)")
    for name, label in (("naive", "verl naive + trivial score"), ("flexrec", "flexrec")):
        t = m["times_per_sample"][name]
        print(f"   {label:28s} {t['cpu_min_s'] * 1e6:7.1f} / {t['cpu_median_s'] * 1e6:7.1f} / {t['wall_median_s'] * 1e6:7.1f} µs")
    x = m["flexrec_vs_naive"]
    print(f"   flexrec / naive              {x['cpu_min']:.2f}x / {x['cpu_median']:.2f}x / {x['wall_median']:.2f}x")
    if "reward_manager_stages" in r:
        p = r["reward_manager_stages"]
        print("   per-sample stages, µs (CPU, each on its own)")
        for name, rows in (("naive", p["naive_stages_us"]), ("flexrec", p["flexrec_stages_us"])):
            print(f"   {name:8s} " + ", ".join(f"{k} {v:.0f}" for k, v in rows.items()))
        print(f"   sums: naive {p['naive_sum_us']:.0f}, flexrec {p['flexrec_sum_us']:.0f} ({p['stage_sum_ratio']:.2f}x); score_text {p['score_text_total_us']:.0f}")
    print(f"\n4. scaling: swap_item_rewards (causal), µs per list, {r['scaling']['swap_vs_K'][0]['n_lists']:,} lists")
    print(f"   {'K':>6s} {'package':>10s} {'pairwise':>10s} {'naive':>12s}")
    for row in r["scaling"]["swap_vs_K"]:
        pk = row["package_s"] / row["n_lists"] * 1e6
        pw = f"{row['pairwise_s'] / row['n_lists'] * 1e6:10.3f}" if "pairwise_s" in row else f"{'-':>10s}"
        nv = f"{row['naive_per_list_s'] * 1e6:12.1f}" if "naive_per_list_s" in row else f"{'-':>12s}"
        print(f"   {row['K']:>6d} {pk:10.3f} {pw} {nv}")
    print("   lists (K=30): " + ", ".join(f"{row['n_lists']}: {row['package_s'] * 1e3:.2f} ms" for row in r["scaling"]["swap_vs_lists"]))
    print("   estimator vs bs (CPU min): " + ", ".join(
        f"{row['bs']}: grpo_vectorized {row['grpo_vectorized'] * 1e3:.2f} / trainer path {row['trainer_path'] * 1e3:.2f} ms "
        f"({row['trainer_path'] / row['grpo_vectorized']:.2f}x)"
        for row in r["scaling"]["estimator_vs_bs"]
    ))
    t = r["targets_met"]
    print("\ntargets (CPU min): " + ", ".join(f"{k} {'MET' if v else 'MISSED'}" for k, v in t.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="seconds-long run with small sizes (CI)")
    p.add_argument("--repeats", type=int, default=7, help="swap and scaling timings")
    p.add_argument("--estimator-repeats", type=int, default=60, help="interleaved rounds of the estimator contenders")
    p.add_argument("--rm-repeats", type=int, default=15, help="interleaved rounds of the reward managers")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine; the naive baselines are single-threaded anyway)")
    p.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        sizes = {"lists": 128, "K": 30, "naive_repeats": 1, "exact": 32, "bs": 128, "L": 256, "rm": 16, "Ks": (10, 30, 100),
                 "nlists": (256, 1024), "est_bs": (64, 128), "naive_lists": 4, "k_lists": 256, "stages": 16}
        args.repeats, args.estimator_repeats, args.rm_repeats = min(args.repeats, 3), 5, 3
    else:
        sizes = {"lists": 4096, "K": 30, "naive_repeats": 3, "exact": 256, "bs": 1024, "L": 1024, "rm": 256,
                 "Ks": (10, 20, 30, 50, 100, 1000), "nlists": (256, 1024, 4096, 16384, 65536), "est_bs": (256, 1024, 4096),
                 "naive_lists": 32, "k_lists": 4096, "stages": 64}
    t0 = time.perf_counter()
    steps = tqdm(total=5, desc="cost benchmark")
    res = {"smoke": args.smoke, "repeats": {"swap": args.repeats, "estimator": args.estimator_repeats, "reward_manager": args.rm_repeats}, "targets": TARGETS}
    res["swap"] = bench_swap(sizes["lists"], sizes["K"], args.repeats, sizes["naive_repeats"], sizes["exact"])
    steps.update()
    res["estimator"] = bench_estimator(sizes["bs"], sizes["L"], args.estimator_repeats)
    fetch = bench_trainer_fetch(sizes["bs"], sizes["L"], 9 if not args.smoke else 3)
    res["estimator"]["trainer_fetch"] = {"times": fetch, "vs_grpo_vectorized": {
        s.removesuffix("_s"): fetch[s] / res["estimator"]["times"]["grpo_vectorized"][s] for s in STATS}}
    steps.update()
    res["reward_manager"] = bench_reward_manager(sizes["rm"], args.rm_repeats)
    steps.update()
    res["reward_manager_stages"] = profile_reward_managers(sizes["stages"])
    steps.update()
    res["scaling"] = bench_scaling(sizes["Ks"], sizes["nlists"], sizes["est_bs"], sizes["L"], max(args.repeats, 9), sizes["naive_lists"], sizes["k_lists"])
    steps.update()
    steps.close()
    res["targets_met"] = {
        "swap_speedup>=2000x": res["swap"]["speedup_vs_naive"] >= TARGETS["swap_speedup_min"],
        "swap_exact<=1e-6": max(res["swap"]["max_abs_err_causal"], res["swap"]["max_abs_err_noncausal"]) <= TARGETS["swap_exact_atol"],
        "trainer_path<=3x grpo_vectorized": res["estimator"]["vs_grpo_vectorized"]["trainer_path"]["cpu_min"] <= TARGETS["trainer_path_vs_grpo_vectorized_max"],
        "reward_manager<=2x naive": res["reward_manager"]["flexrec_vs_naive"]["cpu_min"] <= TARGETS["reward_manager_vs_naive_max"],
    }
    res["wall_s"] = time.perf_counter() - t0
    res["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                      "python": platform.python_version(), "load_average_1m_at_end": os.getloadavg()[0]}
    print_tables(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    png = args.out.with_name(args.out.stem + "_scaling.png")
    plot(res, png)
    print(f"\nwall time {res['wall_s']:.1f} s; wrote {args.out.name} and {png.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
