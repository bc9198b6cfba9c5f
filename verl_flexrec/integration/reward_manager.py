"""The ``flexrec`` reward manager for verl's reward loop.

``run_single`` decodes one rollout, scores it with :func:`verl_flexrec.reward.score_response`, and
returns the sequence reward as ``reward_score`` (verl puts it on the last response token). The
item-level signal travels in ``reward_extra_info``, one value per key and rollout: scalars, and
the item arrays as fixed-width binary (:mod:`verl_flexrec.integration.item_data` says why a
``str``), because verl averages every non-string value in validation and stacks each key across
rollouts with ``np.array``:

=========================  =====================================================================
key                        value
=========================  =====================================================================
flexrec_valid              1.0 for a well-formed full permutation, else 0.0
flexrec_error              "" or the parse error code (missing_tags, truncated, ...)
flexrec_seq_reward         the sequence reward (same as reward_score)
flexrec_ndcg               list NDCG used in the reward
flexrec_uncertainty        u, variance of the list reward (0 when every gain is observed)
flexrec_num_items          K, items in the ranked list (0 when invalid)
flexrec_item_rewards_f32   the K item rewards, ranked order: float32 bytes as a latin-1 str
flexrec_num_item_tokens    T, response tokens that spell a ranked id
flexrec_item_tokens_i32    the T (token index, item position) pairs: int32 bytes, likewise
flexrec_plugin             ``<version>+<source digest>@<host>:<pid>`` of the verl-flexrec that
                           scored it (:mod:`verl_flexrec.provenance`); the trainer refuses a
                           rollout from another build
ndcg@5 ndcg@10 recall@5    evaluation metrics (0 for invalid output), logged by verl's validation
mrr@5
=========================  =====================================================================

With ``algorithm.flexrec.reward.critic_path`` the manager loads the critic when verl constructs it
(at reward-loop worker start: a bad path or a changed file stops the worker, and the trainer's
start-up check reports it), once per process, and fills unobserved gains with that one object for
the whole run (:mod:`verl_flexrec.integration.critic_serving`).

:func:`verl_flexrec.integration.item_data.collate_flexrec_inputs` stacks a batch of these into the
estimator's tensors with one ``np.frombuffer`` per array; the ``flexrec_sync`` trainer
(:mod:`verl_flexrec.integration.trainer`) carries them from verl's TransferQueue to the estimator.
With ``algorithm.adv_estimator=flexrec`` the manager refuses to start under a trainer that would
drop them (verl's legacy trainer, or a V1 trainer mode other than a FlexRec one), naming the fix.
"""

from __future__ import annotations

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from ..config import FlexRecConfig, config_get
from ..provenance import PLUGIN_KEY, plugin_stamp
from ..reward import score_response
from ..schema import GroundTruth, GroundTruthError
from ..tokens import char_spans_to_token_spans, token_char_offsets
from .item_data import ITEM_DATA_KEYS, encode_item_data

__all__ = ["EXTRA_INFO_KEYS", "FlexRecRewardManager"]

EXTRA_INFO_KEYS = (
    "flexrec_valid",
    "flexrec_error",
    "flexrec_seq_reward",
    "flexrec_ndcg",
    "flexrec_uncertainty",
    *ITEM_DATA_KEYS,
    PLUGIN_KEY,
    "ndcg@5",
    "ndcg@10",
    "recall@5",
    "mrr@5",
)


def _check_trainer_carries_item_rewards(config) -> None:
    """Fail at start-up, not silently, when the configured trainer would drop the item rewards.

    Runs in every reward-loop worker, on both of verl's trainer paths (this is the one FlexRec
    object the legacy ``trainer.use_v1=false`` path constructs too).
    """
    if config_get(config, "algorithm.adv_estimator") == "flexrec" and config_get(config, "trainer.use_v1") is not None:
        from .trainer import check_trainer_config  # verl's V1 trainer module: import only when needed

        check_trainer_config(config)


class FlexRecRewardManager(RewardManagerBase):
    """Reward manager registered as ``flexrec`` (``reward.reward_manager.name=flexrec``)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None, **_):
        super().__init__(config, tokenizer, compute_score)
        _check_trainer_carries_item_rewards(config)
        self.flexrec = FlexRecConfig.from_algorithm_config(config_get(config, "algorithm"))
        # A response this long was cut by the rollout: an invalid one is reported as truncated.
        self.max_response_length = config_get(config, "actor_rollout_ref.rollout.response_length")
        self.plugin_stamp = plugin_stamp()
        self.critic = None
        if self.flexrec.reward.critic_path:
            from .critic_serving import serve_critic  # torch/numpy + verl.utils.fs

            self.critic = serve_critic(self.flexrec.reward.critic_path, self.flexrec.reward.critic_sha256)

    def score_text(self, response_ids, ground_truth) -> dict:
        """Synchronous core of :meth:`run_single` for one rollout's valid response ids (a 1-D
        tensor, as verl gives them, or a sequence of ints)."""
        ids = response_ids.tolist() if hasattr(response_ids, "tolist") else list(map(int, response_ids))
        # transformers decodes a tensor faster than a list (no per-element type check)
        text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
        if self.critic is not None:
            from ..critic import is_filled

            if not is_filled(ground_truth):
                ground_truth = self.critic.fill(ground_truth)
        result = score_response(text, ground_truth, self.flexrec.reward, self.flexrec.uncertainty)
        if not result.valid and self.max_response_length and len(ids) >= int(self.max_response_length):
            result.error = "truncated"
        token_spans: list[tuple[int, int]] = []
        if result.valid:
            offsets = token_char_offsets(self.tokenizer, ids, text)
            token_spans = char_spans_to_token_spans(offsets, result.item_char_spans)
        info = {
            "flexrec_valid": float(result.valid),
            "flexrec_error": result.error,
            "flexrec_seq_reward": result.score,
            "flexrec_ndcg": result.ndcg,
            "flexrec_uncertainty": result.uncertainty,
            **encode_item_data(result.item_rewards, token_spans),
            PLUGIN_KEY: self.plugin_stamp,
            **result.metrics,
        }
        return {"reward_score": result.score, "reward_extra_info": info}

    async def run_single(self, data: DataProto) -> dict:
        item = data[len(data) - 1]  # multi-output trajectories: score the final output, like verl's managers
        response_ids = item.batch["responses"]
        valid_len = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        raw_gt = item.non_tensor_batch["reward_model"]["ground_truth"]
        try:
            ground_truth = GroundTruth.from_any(raw_gt)
        except GroundTruthError as e:
            where = item.non_tensor_batch.get("extra_info", {}) or {}
            raise GroundTruthError(
                f"row index={where.get('index', '?')} split={where.get('split', '?')}: {e}"
            ) from None
        # Scored inline, not in an executor thread as verl's naive manager runs user functions: the
        # work is ~0.3 ms of Python that holds the GIL, so a thread runs nothing in parallel, and
        # the hand-off cost about as much again (benchmarks/bench_cost.py, reward manager).
        return self.score_text(response_ids[:valid_len], ground_truth)
