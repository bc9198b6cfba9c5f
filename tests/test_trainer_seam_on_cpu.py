"""FlexRec's item rewards reach the right tokens through verl's own V1 trainer code, on CPU.

In the style of verl's ``tests/trainer/ppo/v1/test_*_on_cpu.py``: workers and trainers are built
with ``__new__`` (no Ray, no GPU) and TransferQueue's ``kv_batch_get``/``kv_batch_put`` are replaced
by an in-memory store that round-trips every value through TransferQueue's own wire encoding
(``serial_utils.encode/decode``) and packs fields with its ``SimpleStorage`` packer, so the trainer
sees exactly the types a real run gets (jagged nested tensors, ``NonTensorStack``).

The chain under test is the production one, each step verl's code except where marked:

    FlexRec reward manager.run_single (ours)
      -> verl RewardLoopWorker.compute_score -> verl AgentLoopWorker._compute_score
      -> verl AgentLoopWorkerTQ._agent_loop_postprocess -> TransferQueue (in-memory)
      -> verl upsample_batch_to_divisible_size (padding rows) + a reorder like _balance_batch
      -> FlexRecTrainerSync._compute_advantage (ours) -> verl PPOTrainer._compute_advantage
      -> verl compute_advantage -> `flexrec` estimator (ours) -> TransferQueue

and the advantages written back are compared with values computed here from first principles
(brute-force swaps of NDCG, hand-located id tokens, per-position group normalisation).

Seam dependencies on verl, each caught here: PPOTrainer._compute_advantage calling the registered
estimator with ``index=uid`` rows in key order; ``extra_fields["reward_extra_info"]`` surviving the
agent loop into TransferQueue; ``trainer_mode`` handling; ``register_trainer``/``get_trainer_cls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from unittest.mock import patch

import numpy as np
import pytest
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from tensordict import NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta
from transfer_queue.storage.managers.simple_storage_manager import (
    AsyncSimpleStorageManager,
)
from transfer_queue.utils.serial_utils import decode, encode
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.experimental.reward_loop import reward_loop
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.trainer.ppo.v1.trainer_base import PPOTrainer, get_trainer_cls

import verl_flexrec.register  # noqa: F401
from verl_flexrec.integration import handoff
from verl_flexrec.integration.estimator import compute_flexrec_advantage
from verl_flexrec.integration.item_data import (
    ITEM_REWARDS_KEY,
    ITEM_TOKENS_KEY,
    decode_item_rewards,
    decode_item_tokens,
)
from verl_flexrec.integration.trainer import FlexRecTrainerSync
from verl_flexrec.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from verl_flexrec.provenance import plugin_build
from verl_flexrec.schema import GroundTruth
from verl_flexrec.testing import build_tiny_tokenizer

IDS = ["1", "2", "3", "4", "5", "6", "7"]
GAINS = [3.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0]
# prompt p1: candidates 2, 5, 7 were not observed; the critic filled them with these variances
VARS_P1 = [0.0, 0.3, 0.0, 0.0, 0.2, 0.0, 0.5]
EPS_U = 0.01
ROLLOUTS = {  # uid -> ranked orders (None = an invalid response)
    "p0": [["1", "4", "3", "6", "2", "5", "7"], ["7", "6", "5", "4", "3", "2", "1"], ["4", "1", "2", "3", "5", "6", "7"], None],
    "p1": [["3", "1", "4", "2", "7", "5", "6"], ["1", "3", "6", "4", "5", "7", "2"], ["2", "5", "7", "1", "4", "3", "6"]],
}


# ----------------------------------------------------------------------------- fake TransferQueue
class InMemoryTQ:
    """kv_batch_get / kv_batch_put / async_kv_batch_put with TransferQueue's encoding and packing."""

    def __init__(self):
        self.rows: dict[tuple[str, str], dict] = {}
        self.tags: dict[tuple[str, str], dict] = {}

    @staticmethod
    def _per_sample(value, n):
        if isinstance(value, torch.Tensor):
            return list(value.unbind(0)) if value.is_nested else [value[i] for i in range(n)]
        if isinstance(value, NonTensorStack):
            return value.tolist()
        return list(value)

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None, data_parser=None):
        if fields is not None:
            assert fields.batch_size[0] == len(keys)
            for name in fields.keys():
                samples = decode(encode(self._per_sample(fields[name], len(keys))))  # the wire
                for key, sample in zip(keys, samples):
                    self.rows.setdefault((partition_id, key), {})[name] = sample
        for key, tag in zip(keys, tags or [{}] * len(keys)):
            self.tags.setdefault((partition_id, key), {}).update(tag)
        return KVBatchMeta(
            keys=list(keys), tags=[dict(self.tags[(partition_id, k)]) for k in keys], partition_id=partition_id
        )

    async def async_kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        return self.kv_batch_put(keys, partition_id, fields=fields, tags=tags)

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        keys = [keys] if isinstance(keys, str) else list(keys)
        rows = [self.rows[(partition_id, k)] for k in keys]
        names = list(rows[0]) if select_fields is None else [select_fields] if isinstance(select_fields, str) else select_fields
        present = [f for f in names if all(f in r for r in rows)]  # TransferQueue drops unknown fields
        packed = {f: AsyncSimpleStorageManager._pack_field_values([r[f] for r in rows]) for f in present}
        return TensorDict(packed, batch_size=[len(keys)])

    def kv_clear(self, keys, partition_id):
        for key in [keys] if isinstance(keys, str) else keys:
            self.rows.pop((partition_id, key), None)
            self.tags.pop((partition_id, key), None)

    def patches(self):
        return [
            patch.object(tq, "kv_batch_get", self.kv_batch_get),
            patch.object(tq, "kv_batch_put", self.kv_batch_put),
            patch.object(tq, "async_kv_batch_put", self.async_kv_batch_put),
            patch.object(tq, "kv_clear", self.kv_clear),
        ]


# ----------------------------------------------------------------------------- helpers
def _config(adv_estimator="flexrec", flexrec=None, n=4, **trainer):
    return OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": adv_estimator,
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
                "use_kl_in_reward": False,
                "flexrec": flexrec or {"uncertainty": {"eps": EPS_U}},
            },
            "actor_rollout_ref": {"rollout": {"n": n, "response_length": 256}},
            "reward": {"custom_reward_function": {"path": None}, "reward_model": {"enable": False}},
            "trainer": {"use_v1": True, "v1": {"trainer_mode": "flexrec_sync", **trainer}},
        }
    )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _response(tokenizer, order):
    """Response token ids built piece by piece, and the [first, end) token span of every id."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    if order is None:
        return enc("I would pick 3 first, then maybe 1"), []
    ids = enc(f"{THINK_OPEN}likes comedy{THINK_CLOSE}\n{ANSWER_OPEN}[")
    spans = []
    for k, cid in enumerate(order):
        if k:
            ids += enc(", ")
        piece = enc(cid)
        spans.append((len(ids), len(ids) + len(piece)))
        ids += piece
    ids += enc(f"]{ANSWER_CLOSE}") + [tokenizer.eos_token_id]
    return ids, spans


def _ndcg(gains):
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains, reverse=True)))
    return dcg / ideal if ideal > 0 else 0.0


def _brute_force_swap_rewards(gains):
    """r_k = mean over j>k of NDCG(list) - NDCG(list with k and j swapped); r_K = 0."""
    base, out = _ndcg(gains), []
    for k in range(len(gains)):
        losses = []
        for j in range(k + 1, len(gains)):
            swapped = list(gains)
            swapped[k], swapped[j] = swapped[j], swapped[k]
            losses.append(base - _ndcg(swapped))
        out.append(sum(losses) / len(losses) if losses else 0.0)
    return out


def _ground_truth(uid):
    if uid == "p1":
        return GroundTruth(candidates=IDS, gains=GAINS, observed=[v == 0 for v in VARS_P1], gain_var=VARS_P1).to_dict()
    return GroundTruth(candidates=IDS, gains=GAINS).to_dict()


def _agent_loop_worker(manager, config):
    """verl's AgentLoopWorkerTQ (undecorated) scoring through verl's RewardLoopWorker."""
    reward_worker = object.__new__(reward_loop.RewardLoopWorker)
    reward_worker.config, reward_worker.reward_manager = config, manager

    class Handle:  # a Ray actor handle's `.compute_score.remote(data)` is awaitable
        class compute_score:
            @staticmethod
            def remote(data):
                return reward_worker.compute_score(data)

    worker = object.__new__(agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class)
    worker.processor = None
    worker.mm_processor_kwargs = None
    worker.distillation_enabled = False
    worker.reward_loop_worker_handles = [Handle()]
    return worker


def _roll_out(tokenizer, store, config, prompt_ids, uids=None, validate=False):
    """Every rollout of ROLLOUTS through verl's agent-loop postprocess into the store (``uids``:
    the prompt uid to use for each prompt of ROLLOUTS, in order)."""
    manager = get_reward_manager_cls("flexrec")(config=config, tokenizer=tokenizer, compute_score=None)
    worker = _agent_loop_worker(manager, config)
    truth = {}
    for (prompt, orders), uid in zip(ROLLOUTS.items(), uids or list(ROLLOUTS)):
        for session, order in enumerate(orders):
            ids, spans = _response(tokenizer, order)
            output = AgentLoopOutput(
                prompt_ids=prompt_ids, response_ids=ids, response_mask=[1] * len(ids), num_turns=2,
                metrics=AgentLoopMetrics(), extra_fields={},
            )
            kwargs = {
                "uid": uid,
                "session_id": session,
                "global_steps": 1,
                "data_source": "flexrec/test",
                "reward_model": {"style": "rule", "ground_truth": _ground_truth(prompt)},
                "extra_info": {"split": "train", "index": 0},
            }
            asyncio.run(worker._agent_loop_postprocess(output, validate, **kwargs))
            truth[f"{uid}_{session}_0"] = (prompt, order, ids, spans)
    return truth


def _expected(truth, keys, norm_by_std=True, uncertainty=True, items=True):
    """Token advantages from first principles, one row per key (padding rows: zeros)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key in truth:
            groups.setdefault(truth[key][0], []).append(key)
    seq, item_r, u = {}, {}, {}
    for key, (uid, order, _, _) in truth.items():
        if order is None:
            seq[key], item_r[key], u[key] = -2.0, None, 0.0
            continue
        ranked = [GAINS[IDS.index(c)] for c in order]
        seq[key], item_r[key] = 0.1 + _ndcg(ranked), _brute_force_swap_rewards(ranked)
        variances = [VARS_P1[IDS.index(c)] for c in order] if uid == "p1" else [0.0] * len(order)
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(GAINS, reverse=True)))
        u[key] = sum(v / math.log2(i + 2) ** 2 for i, v in enumerate(variances)) / ideal**2

    def normalise(values, floor=0.0):
        t = torch.tensor(values, dtype=torch.float64)
        mean, std = t.mean(), t.std()
        return (t - mean) / (max(std, floor) + 1e-6) if norm_by_std else t - mean

    seq_adv, item_adv = {}, {}
    for members in groups.values():
        for key, a in zip(members, normalise([seq[k] for k in members])):
            seq_adv[key] = float(a)
        valid = [k for k in members if item_r[k] is not None]
        # the default std floor: 0.1 x the RMS of the group's per-position stds
        stds = [float(torch.tensor([item_r[k][pos] for k in valid], dtype=torch.float64).std()) for pos in range(len(IDS))]
        floor = 0.1 * math.sqrt(sum(x * x for x in stds) / len(stds)) if len(valid) >= 2 else 0.0
        for pos in range(len(IDS)):
            for key, a in zip(valid, normalise([item_r[k][pos] for k in valid], floor)):
                item_adv[(key, pos)] = float(a)
    real = [k for k in keys if k in truth]
    raw = {k: 1.0 / (u[k] + EPS_U) for k in real}
    mean_raw = sum(raw.values()) / len(raw)
    scale = {k: min(raw[k] / mean_raw, 3.0) if uncertainty else 1.0 for k in real}

    width = max(len(truth[k][2]) for k in real)
    out = torch.zeros(len(keys), width, dtype=torch.float64)
    for row, key in enumerate(keys):
        if key not in truth:
            continue
        _, order, ids, spans = truth[key]
        out[row, : len(ids)] = seq_adv[key]
        if items and order is not None:
            for pos, (first, end) in enumerate(spans):
                out[row, first:end] = item_adv[(key, pos)]
        out[row] *= scale[key]
    return out, scale, u, item_r, seq


def _trainer(config):
    trainer = FlexRecTrainerSync.__new__(FlexRecTrainerSync)
    trainer.config = config
    return trainer


def _run_seam(tokenizer, config, pad_to=12, seed=0):
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        truth = _roll_out(tokenizer, store, config, prompt_ids=[5, 6, 7])
        keys = list(truth)
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        batch = upsample_batch_to_divisible_size(batch, pad_to, tokenizer.eos_token_id)  # verl's padding rows
        batch.reorder(list(np.random.default_rng(seed).permutation(len(batch))))  # like _balance_batch
        metrics = {}
        out_batch = _trainer(config)._compute_advantage(batch, metrics)
        written = store.kv_batch_get(out_batch.keys, "train", ["advantages", "returns", "response_mask"])
    return truth, batch, written, metrics


def _padded(nested):
    return nested.to_padded_tensor(0.0) if nested.is_nested else nested


# ----------------------------------------------------------------------------- tests
def test_item_rewards_reach_their_tokens_through_verl_compute_advantage(tokenizer):
    config = _config()
    truth, batch, written, metrics = _run_seam(tokenizer, config)
    keys = list(batch.keys)
    assert sum(k in truth for k in keys) == 7 and len(keys) == 12  # 5 of verl's padding rows

    expected, scale, u, item_r, seq = _expected(truth, keys)
    adv = _padded(written["advantages"]).double()
    torch.testing.assert_close(adv, expected[:, : adv.shape[1]], atol=2e-6, rtol=2e-6)
    assert expected[:, adv.shape[1] :].abs().sum() == 0
    torch.testing.assert_close(_padded(written["returns"]).double(), adv)
    # item tokens really carry item advantages (not the sequence one) and the scale is not trivial
    row = keys.index("p1_0_0")
    first, _ = truth["p1_0_0"][3][0]
    assert not torch.allclose(adv[row, first], adv[row, 0])
    assert len({round(s, 6) for s in scale.values()}) > 2

    # training metrics, from the same first principles
    valid_items = [r for k, r in item_r.items() if r is not None for r in r]
    assert metrics["flexrec/valid_ratio"] == pytest.approx(6 / 7)
    assert metrics["flexrec/ndcg/mean"] == pytest.approx(np.mean([s - 0.1 if s != -2.0 else 0.0 for s in seq.values()]))
    assert metrics["flexrec/item_reward/mean"] == pytest.approx(np.mean(valid_items), abs=1e-7)
    assert metrics["flexrec/item_reward/std"] == pytest.approx(np.std(valid_items), abs=1e-7)
    assert metrics["flexrec/uncertainty/mean"] == pytest.approx(np.mean(list(u.values())))
    assert metrics["flexrec/uncertainty_scale/mean"] == pytest.approx(np.mean(list(scale.values())), abs=1e-6)
    assert metrics["flexrec/uncertainty_scale/min"] == pytest.approx(min(scale.values()), abs=1e-6)
    assert metrics["flexrec/uncertainty_scale/max"] == pytest.approx(max(scale.values()), abs=1e-6)
    clipped = [k for k, uu in u.items() if (1 / (uu + EPS_U)) / np.mean([1 / (x + EPS_U) for x in u.values()]) > 3.0]
    assert metrics["flexrec/uncertainty_scale/clipped_ratio"] == pytest.approx(len(clipped) / 7)
    assert metrics["flexrec/error/missing_tags"] == pytest.approx(1 / 7)


def test_item_data_travels_as_fixed_width_numbers_through_transfer_queue(tokenizer):
    """What TransferQueue hands the trainer (after its wire encoding): per rollout, the item rewards
    and the item tokens as float32 / int32 read with np.frombuffer, equal to first principles."""
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        truth = _roll_out(tokenizer, store, _config(), prompt_ids=[5, 6, 7])
        keys = list(truth)
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        provided = _trainer(_config())._fetch_flexrec_batch(batch)
    for key, info in zip(keys, provided.infos):
        _, order, ids, spans = truth[key]
        assert isinstance(info[ITEM_REWARDS_KEY], str) and isinstance(info[ITEM_TOKENS_KEY], str)  # as verl's validation needs
        rewards, tokens = decode_item_rewards(info), decode_item_tokens(info)
        assert rewards.dtype == np.float32 and tokens.dtype == np.int32
        if order is None:
            assert info["flexrec_num_items"] == 0 and rewards.size == 0 and tokens.size == 0
            continue
        ranked = [GAINS[IDS.index(c)] for c in order]
        np.testing.assert_allclose(rewards, _brute_force_swap_rewards(ranked), rtol=0, atol=1e-7)
        assert tokens.tolist() == [[t, k] for k, (first, end) in enumerate(spans) for t in range(first, end)]


def test_verl_validation_averages_the_scalars_and_dumps_the_item_data(tokenizer, tmp_path):
    """verl's V1 ``PPOTrainer._validate`` (its own collection, metrics and JSONL dump) on FlexRec
    rollouts: the scalars become val metrics, the binary item data is skipped by the averaging,
    and the dump holds it intact."""
    store = InMemoryTQ()
    config = _config()
    config.actor_rollout_ref.rollout.val_kwargs = {"n": 4}
    config.trainer.log_val_generations = 0
    config.trainer.validation_data_dir = str(tmp_path)
    trainer = _trainer(config)
    trainer.tokenizer, trainer.global_steps = tokenizer, 3
    trainer._init_dump_executor()
    trainer.val_dataloader = [{"raw_prompt": np.array([[{"role": "user", "content": "rank"}]] * 2 + [None], dtype=object)[:-1],
                               "data_source": np.array(["flexrec/test"] * 2, dtype=object)}]
    truth = {}

    class AgentLoopManager:  # rollouts of every validation prompt land in TransferQueue's "val" partition
        @staticmethod
        def generate_sequences(batch):
            truth.update(_roll_out(tokenizer, store, config, [5, 6, 7], uids=[str(u) for u in batch["uid"]], validate=True))

    class ReplayBuffer:
        @staticmethod
        def sample(global_steps, partition_id, batch_size):
            keys = list(truth)
            return KVBatchMeta(keys=keys, tags=[store.tags[(partition_id, k)] for k in keys], partition_id=partition_id), None

    trainer.agent_loop_manager, trainer.replay_buffer = AgentLoopManager(), ReplayBuffer()
    trainer.reward_loop_manager = type("RewardLoop", (), {"reward_loop_worker_handles": ["in the agent loop"]})()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        metrics = PPOTrainer._validate(trainer)
    for future in trainer._dump_futures:
        future.result()

    valid = [k for k, t in truth.items() if t[1] is not None]
    ndcg_by_key = {k: _ndcg([GAINS[IDS.index(c)] for c in truth[k][1]]) if k in valid else 0.0 for k in truth}
    # verl's mean@n: over the n rollouts of a prompt (p0 has 4, p1 has 3)
    for prompt, orders in ROLLOUTS.items():
        n = len(orders)
        want = np.mean([v for k, v in ndcg_by_key.items() if truth[k][0] == prompt])
        assert metrics[f"val-aux/flexrec/test/flexrec_ndcg/mean@{n}"] == pytest.approx(want)
        want_items = np.mean([len(truth[k][1] or []) for k in truth if truth[k][0] == prompt])
        assert metrics[f"val-aux/flexrec/test/flexrec_num_items/mean@{n}"] == pytest.approx(want_items)
    assert not any(k in name for name in metrics for k in (ITEM_REWARDS_KEY, ITEM_TOKENS_KEY))
    with open(tmp_path / "3.jsonl", encoding="utf-8") as f:  # lines end at "\n" only: json escapes it
        dumped = [json.loads(line) for line in f]
    assert len(dumped) == len(truth)
    for row in dumped:
        _, order, _, spans = truth[row["uid"]]
        assert decode_item_tokens(row).tolist() == [[t, k] for k, (first, end) in enumerate(spans) for t in range(first, end)]
        if order is not None:
            ranked = [GAINS[IDS.index(c)] for c in order]
            np.testing.assert_allclose(decode_item_rewards(row), _brute_force_swap_rewards(ranked), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "flexrec,kw",
    [
        ({"advantage": {"mode": "rec_r1"}, "uncertainty": {"enable": False}}, {"items": False, "uncertainty": False}),
        ({"uncertainty": {"enable": False}}, {"uncertainty": False}),
    ],
    ids=["rec_r1_baseline", "no_uncertainty_baseline"],
)
def test_baseline_flags_through_the_seam(tokenizer, flexrec, kw):
    truth, batch, written, _ = _run_seam(tokenizer, _config(flexrec=flexrec), seed=1)
    expected, *_ = _expected(truth, list(batch.keys), **kw)
    adv = _padded(written["advantages"]).double()
    torch.testing.assert_close(adv, expected[:, : adv.shape[1]], atol=2e-6, rtol=2e-6)


def test_verl_grpo_under_the_flexrec_trainer_is_unchanged_and_still_logs(tokenizer):
    """`algorithm.adv_estimator=grpo` with trainer_mode=flexrec_sync: verl's own GRPO path."""
    truth, batch, written, metrics = _run_seam(tokenizer, _config(adv_estimator="grpo"))
    expected, *_ = _expected(truth, list(batch.keys), items=False, uncertainty=False)
    adv = _padded(written["advantages"]).double()
    torch.testing.assert_close(adv, expected[:, : adv.shape[1]], atol=2e-6, rtol=2e-6)
    assert metrics["flexrec/valid_ratio"] == pytest.approx(6 / 7)
    assert "flexrec/uncertainty_scale/mean" not in metrics


def test_flexrec_sync_is_registered_and_behaves_as_verl_sync():
    assert get_trainer_cls("flexrec_sync") is FlexRecTrainerSync
    trainer = FlexRecTrainerSync.__new__(FlexRecTrainerSync)
    trainer.trainer_mode = "flexrec_sync"  # what PPOTrainer.__init__ assigns from the config
    assert trainer.trainer_mode == "sync"
    trainer.config = OmegaConf.create(
        {
            "algorithm": {},
            "data": {"train_batch_size": 16, "gen_batch_size": 8},
            "reward": {"reward_model": {"enable": False, "enable_resource_pool": False}},
            "trainer": {
                "v1": {
                    "trainer_mode": "flexrec_sync",
                    "sync": {},
                    "sampler": {"custom_sampler": None, "max_off_policy_threshold": 1, "max_off_policy_strategy": "drop", "sampler_kwargs": {}},
                }
            },
        }
    )
    buffer = PPOTrainer._build_replay_buffer(trainer)
    assert type(buffer) is ReplayBuffer and buffer.gen_batch_size == 8  # not ReplayBufferAsync / forced 1


def test_rows_out_of_order_are_refused():
    mask = torch.ones(3, 4)
    provided = handoff.FlexRecBatch(uids=["a", "a", "b"], infos=[None] * 3, response_lengths=[4, 4, 4], real=[True] * 3)
    with handoff.provide(provided), pytest.raises(handoff.FlexRecBatchMismatch, match="row 1"):
        compute_flexrec_advantage(torch.zeros(3, 4), mask, index=np.array(["a", "b", "a"], dtype=object), config=_config().algorithm)
    short = handoff.FlexRecBatch(uids=["a", "a", "b"], infos=[None] * 3, response_lengths=[4, 4, 3], real=[True] * 3)
    with handoff.provide(short), pytest.raises(handoff.FlexRecBatchMismatch, match="row 2.*token 3.*3 response tokens"):
        compute_flexrec_advantage(torch.zeros(3, 4), mask, index=np.array(["a", "a", "b"], dtype=object), config=_config().algorithm)
    # outside a trainer step the estimator is still verl's GRPO
    tlr = torch.zeros(3, 4)
    tlr[:, -1] = torch.tensor([1.0, 0.0, 2.0])
    index = np.array(["a", "a", "b"], dtype=object)
    ref = core_algos.compute_grpo_outcome_advantage(tlr, mask, index)[0]
    assert torch.equal(compute_flexrec_advantage(tlr, mask, index=index, config=_config().algorithm)[0], ref)


def test_rollouts_without_flexrec_reward_info_fail_with_the_fix(tokenizer):
    store = InMemoryTQ()
    row = {"uid": "p0", "response_mask": torch.ones(3, dtype=torch.int64), "extra_fields": {"reward_extra_info": {"acc": 1.0}}}
    store.kv_batch_put(["p0_0_0"], "train", fields=agent_loop_tq.list_of_dict_to_tensordict([row]), tags=[{}])
    batch = KVBatchMeta(keys=["p0_0_0"], tags=[{}], partition_id="train")
    with patch.object(tq, "kv_batch_get", store.kv_batch_get):
        with pytest.raises(ValueError, match="p0_0_0.*reward.reward_manager.name=flexrec"):
            _trainer(_config())._compute_advantage(batch, {})


@pytest.mark.parametrize(
    "use_v1,mode,error",
    [(False, "sync", "legacy trainer"), (True, "sync", "silently train as plain GRPO"), (True, "flexrec_sync", None)],
)
def test_reward_manager_refuses_trainers_that_drop_item_rewards(tokenizer, use_v1, mode, error):
    config = _config()
    config.trainer.use_v1, config.trainer.v1.trainer_mode = use_v1, mode
    cls = get_reward_manager_cls("flexrec")
    if error is None:
        cls(config=config, tokenizer=tokenizer, compute_score=None)
    else:
        with pytest.raises(ValueError, match=error) as info:
            cls(config=config, tokenizer=tokenizer, compute_score=None)
        assert "trainer.v1.trainer_mode=flexrec_sync" in str(info.value)


def test_the_recipe_config_builds_flexrec_sync_through_verls_constructor(tmp_path):
    """TaskRunnerV1's own steps: get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)."""

    from hydra import compose, initialize_config_dir

    (tmp_path / "t.parquet").write_bytes(b"train rows")
    from verl_flexrec.recipes import config_dir as recipe_config_dir

    config_dir = recipe_config_dir()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="flexrec_trainer",
                         overrides=[f"data.train_files={tmp_path / 't.parquet'}", "data.val_files=/v"])
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)
    # the constructor recorded what the run trains with (docs/cluster.md)
    assert trainer.flexrec_inputs.train_files == [{"path": str(tmp_path / "t.parquet"), "sha256": hashlib.sha256(b"train rows").hexdigest()}]
    assert trainer.flexrec_inputs.critic_sha256 is None and trainer.flexrec_inputs.plugin == plugin_build()
    assert type(trainer) is FlexRecTrainerSync and trainer.trainer_mode == "sync"
    # verl's sync replay buffer with the configured prompt batch (an async mode would force 1)
    assert type(trainer.replay_buffer) is ReplayBuffer and trainer.replay_buffer.gen_batch_size == 32
    assert trainer.parameter_sync_step == 1
