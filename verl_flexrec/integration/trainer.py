"""``flexrec_sync``: verl's V1 synchronous PPO trainer, plus FlexRec's item-level signal.

Select it with ``trainer.v1.trainer_mode=flexrec_sync`` (verl's ``TaskRunnerV1`` looks the name up
with ``get_trainer_cls``). It differs from verl's ``PPOTrainerSync`` in one method:

``_compute_advantage``
    fetches ``uid`` and ``extra_fields`` of the batch's TransferQueue keys (each rollout's response
    length comes with the keys, in verl's ``response_len`` tag) —
    ``extra_fields["reward_extra_info"]`` is where verl's ``AgentLoopWorker._compute_score``
    stored the ``flexrec`` reward manager's output for each rollout — and runs verl's own
    ``PPOTrainer._compute_advantage`` while :func:`verl_flexrec.integration.handoff.provide`
    makes those rows visible to the ``flexrec`` estimator. Everything else (in-reward KL,
    rollout correction, writing nested advantages back to TransferQueue) stays verl's code.
    It then adds FlexRec's training metrics (:mod:`verl_flexrec.integration.metrics`) to the
    step's metrics, which verl's ``fit`` logs through its trackers. Every rollout's FlexRec data
    must carry this trainer's verl-flexrec build (:func:`.workers.check_rollout_stamps`).

Cluster safety, when the ``flexrec`` reward manager is configured (docs/cluster.md):

``__init__``
    hashes the critic and training files and pins the critic's hash in the config the workers
    get (:mod:`verl_flexrec.integration.run_inputs`);
``on_init_end``
    asks every reward-loop worker which verl-flexrec, reward manager and critic it runs
    (:func:`.workers.check_reward_workers`): a worker that failed to start stops the run here;
``_save_checkpoint`` / ``_load_checkpoint``
    write ``flexrec_provenance.json`` into each checkpoint and, on resume, refuse one trained with
    another critic or other data unless ``algorithm.flexrec.reward.allow_changed_inputs_on_resume``.

verl's trainer treats every ``trainer_mode`` other than ``"sync"`` as asynchronous (replay buffer,
prompt persistence, checkpoint layout), so ``trainer_mode`` reads ``"sync"`` here whatever name
the config selected this class with; its settings come from ``trainer.v1.sync``.

The legacy trainer (``trainer.use_v1=false``) has no registry to plug a trainer into; the
``flexrec`` reward manager refuses to start there (:func:`check_trainer_config`).
"""

from __future__ import annotations

import logging
import os

import transfer_queue as tq
from tensordict import NonTensorData, NonTensorStack
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls, register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from ..config import FlexRecConfig, config_get
from ..provenance import plugin_build
from . import handoff
from .checkpoint import check_resume_point
from .estimator import estimator_options
from .item_data import ITEM_DATA_KEYS
from .metrics import flexrec_training_metrics
from .run_inputs import check_resumed_inputs, resolve_run_inputs, write_provenance
from .workers import check_reward_workers, check_rollout_stamps

__all__ = [
    "FLEXREC_TRAINER_MODE",
    "REQUIRED_EXTRA_INFO_KEYS",
    "FlexRecTrainerMixin",
    "FlexRecTrainerSync",
    "check_trainer_config",
]

logger = logging.getLogger(__name__)

FLEXREC_TRAINER_MODE = "flexrec_sync"
# reward_extra_info keys the trainer needs from the `flexrec` reward manager
REQUIRED_EXTRA_INFO_KEYS = (
    "flexrec_valid",
    "flexrec_error",
    "flexrec_ndcg",
    "flexrec_uncertainty",
    *ITEM_DATA_KEYS,
)
_REQUIRED_KEYS = frozenset(REQUIRED_EXTRA_INFO_KEYS)
_FETCH_FIELDS = ["uid", "extra_fields"]


def _as_list(value) -> list:
    """Per-row Python values of a non-tensor TransferQueue field (NonTensorStack or list).

    A flat ``NonTensorStack`` is read row by row (``NonTensorData.data``): its ``tolist()`` costs
    ~15 ms per 1,024 rows in tensordict 0.10, four times as much.
    """
    rows = getattr(value, "tensordicts", None)
    if isinstance(value, NonTensorStack) and value.stack_dim == 0 and all(isinstance(r, NonTensorData) for r in rows):
        return [r.data for r in rows]
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _response_lengths(batch) -> list[int]:
    """Response tokens of each row, from verl's TransferQueue tags (``AgentLoopWorkerTQ`` tags every
    rollout with ``response_len``, ``upsample_batch_to_divisible_size`` its padding rows with 1)."""
    try:
        return [int(tag["response_len"]) for tag in batch.tags]
    except (KeyError, TypeError):
        key = next(k for k, tag in zip(batch.keys, batch.tags) if not isinstance(tag, dict) or "response_len" not in tag)
        raise RuntimeError(
            f"rollout {key!r} has no response_len tag in TransferQueue; the FlexRec seam "
            "(verl_flexrec.integration.trainer) needs updating for this verl version"
        ) from None


def _final_rows(keys: list[str]) -> list[int]:
    """Row of the last output of each row's ``{uid}_{session}_{index}`` trajectory (verl's key
    format; ``compute_advantage_for_multi_trajectories`` groups the same way)."""
    last: dict[str, tuple[int, int]] = {}
    sessions = []
    for row, key in enumerate(keys):
        head, _, idx = key.rpartition("_")
        try:
            i = int(idx)
        except ValueError:
            head, i = key, 0
        sessions.append(head)
        if head not in last or last[head][0] < i:
            last[head] = (i, row)
    return [last[head][1] for head in sessions]


def flexrec_configured(config) -> bool:
    """Whether the run uses FlexRec's reward manager or estimator (then every rollout must carry FlexRec data)."""
    return (
        config_get(config, "algorithm.adv_estimator") == "flexrec"
        or config_get(config, "reward.reward_manager.name") == "flexrec"
    )


class FlexRecTrainerMixin:
    """The FlexRec seam on top of any V1 ``PPOTrainer`` subclass (see the module docstring)."""

    flexrec_inputs = None  # RunInputs of a FlexRec run (None: not one, or built without __init__)
    _flexrec_options = None  # (config.algorithm, FlexRecConfig, norm_by_std), read at the first step

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if flexrec_configured(self.config):
            self.flexrec_inputs = resolve_run_inputs(self.config)

    def on_init_end(self):
        if self.flexrec_inputs is not None:
            from .reward_manager import FlexRecRewardManager

            check_reward_workers(
                self.reward_loop_manager.reward_loop_workers,
                self.flexrec_inputs.plugin,
                reward_manager=f"{FlexRecRewardManager.__module__}.{FlexRecRewardManager.__qualname__}",
                critic_sha256=self.flexrec_inputs.critic_sha256,
            )
        super().on_init_end()

    def _save_checkpoint(self):
        if self.flexrec_inputs is not None:  # first: verl's latest_checkpointed_iteration.txt comes last
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            write_provenance(folder, self.flexrec_inputs)
        return super()._save_checkpoint()

    def _load_checkpoint(self):
        """verl's resume, after checking that ``resume_mode=auto``'s checkpoint is complete
        (:mod:`.checkpoint`), and then that the run's critic and training data are the ones the
        checkpoint was trained with (:mod:`.run_inputs`)."""
        if config_get(self.config, "trainer.resume_mode") == "auto":
            folder = os.path.abspath(self.config.trainer.default_local_dir)
            found = check_resume_point(folder)
            what = f"resuming from {found}" if found else f"no checkpoint in {folder}, training from scratch"
            print(f"[flexrec] resume_mode=auto: {what}", flush=True)
        result = super()._load_checkpoint()
        if self.flexrec_inputs is not None and self.global_steps > 0:
            allow = FlexRecConfig.from_algorithm_config(self.config.algorithm).reward.allow_changed_inputs_on_resume
            check_resumed_inputs(self._resumed_folder(), self.flexrec_inputs, allow_changes=allow)
        return result

    def _resumed_folder(self) -> str:
        """The checkpoint folder verl's ``_load_checkpoint`` just resumed from (its own rules)."""
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path":
            return os.path.abspath(trainer.resume_from_path)
        return os.path.join(os.path.abspath(trainer.default_local_dir), f"global_step_{self.global_steps}")

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value) -> None:  # PPOTrainer.__init__ assigns the configured name
        pass


    def _fetch_flexrec_batch(self, batch) -> handoff.FlexRecBatch:
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_FETCH_FIELDS)
        uids = [str(u) for u in _as_list(data.pop("uid"))]
        # absent only if no rollout carries extra_fields (TransferQueue drops unknown fields)
        extra = _as_list(data.pop("extra_fields")) if "extra_fields" in data.keys() else [None] * len(uids)
        real = [not tag.get("is_padding", False) for tag in batch.tags]
        final_rows = _final_rows(list(batch.keys))
        need_items = flexrec_configured(self.config)
        infos = []
        for row, (key, is_real, fields) in enumerate(zip(batch.keys, real, extra)):
            info = (fields or {}).get("reward_extra_info") if isinstance(fields, dict) else None
            has_keys = isinstance(info, dict) and _REQUIRED_KEYS <= info.keys()
            if is_real and not has_keys and need_items:
                missing = [k for k in REQUIRED_EXTRA_INFO_KEYS if not isinstance(info, dict) or k not in info]
                raise ValueError(
                    f"rollout {key!r}: extra_fields['reward_extra_info'] lacks {missing}. "
                    "A FlexRec run (algorithm.adv_estimator=flexrec or reward.reward_manager.name=flexrec) needs "
                    "reward.reward_manager.name=flexrec on every reward-loop worker and rewards computed in the agent "
                    "loop (no colocated reward model: reward.reward_model.enable=false, or enable_resource_pool=true)"
                )
            infos.append(info if has_keys and is_real and final_rows[row] == row else None)
        if need_items:
            check_rollout_stamps(batch.keys, infos, plugin_build())
        algorithm = self.config.algorithm  # the object verl hands the estimator as `config`
        if self._flexrec_options is None or self._flexrec_options[0] is not algorithm:
            self._flexrec_options = (algorithm, *estimator_options(algorithm))
        return handoff.FlexRecBatch(
            uids=uids,
            infos=infos,
            response_lengths=_response_lengths(batch),
            real=real,
            final_rows=final_rows,
            options=self._flexrec_options,
        )

    def _compute_advantage(self, batch, metrics: dict):
        provided = self._fetch_flexrec_batch(batch)
        with handoff.provide(provided):
            batch = super()._compute_advantage(batch, metrics)
        if config_get(self.config, "algorithm.adv_estimator") == "flexrec" and not provided.consumed:
            raise RuntimeError(
                "verl's _compute_advantage did not call the flexrec estimator in this thread; the FlexRec "
                "seam (verl_flexrec.integration.trainer) needs updating for this verl version"
            )
        metrics.update(self._flexrec_metrics(provided))
        if self.flexrec_inputs is not None:
            metrics.update(self.flexrec_inputs.metrics())
        return batch

    @staticmethod
    def _flexrec_metrics(provided: handoff.FlexRecBatch) -> dict[str, float]:
        rows = [i for i, info in enumerate(provided.infos) if info is not None]
        scale = clipped = None
        if provided.result is not None:
            pos = {row: j for j, row in enumerate(provided.result_rows)}
            take = [pos[i] for i in rows]
            scale, clipped = provided.result.scale[take], provided.result.clipped[take]
        return flexrec_training_metrics([provided.infos[i] for i in rows], scale, clipped)


class FlexRecTrainerSync(FlexRecTrainerMixin, PPOTrainerSync):
    """verl's ``PPOTrainerSync`` with FlexRec's item-level advantages; registered as ``flexrec_sync``."""


# Registered on import (idempotent: the same class again is accepted by verl). The entry point
# imports this module when verl imports its V1 trainer package (verl_flexrec.register).
register_trainer(FLEXREC_TRAINER_MODE)(FlexRecTrainerSync)


def is_flexrec_trainer_mode(mode: str) -> bool:
    """Whether ``trainer.v1.trainer_mode=mode`` selects a trainer that carries FlexRec's item signal."""
    try:
        cls = get_trainer_cls(mode)
    except ValueError:
        return False
    return isinstance(cls, type) and issubclass(cls, FlexRecTrainerMixin)


def check_trainer_config(config) -> None:
    """Refuse, with the fix in the message, a run whose trainer would drop FlexRec's item signal.

    Only when ``algorithm.adv_estimator=flexrec`` and the config says which trainer runs.
    """
    if config_get(config, "algorithm.adv_estimator") != "flexrec":
        return
    use_v1 = config_get(config, "trainer.use_v1")
    if use_v1 is None:
        return
    fix = f"set trainer.use_v1=true trainer.v1.trainer_mode={FLEXREC_TRAINER_MODE}"
    if not use_v1:
        raise ValueError(
            "algorithm.adv_estimator=flexrec does not run on verl's legacy trainer (trainer.use_v1=false): it has "
            f"no trainer registry, so item rewards cannot reach the estimator. {fix}"
        )
    mode = config_get(config, "trainer.v1.trainer_mode", "sync")
    if not is_flexrec_trainer_mode(mode):
        raise ValueError(
            f"algorithm.adv_estimator=flexrec with trainer.v1.trainer_mode={mode}: verl's {mode!r} trainer passes "
            f"only token_level_rewards to estimators, so FlexRec would silently train as plain GRPO. {fix}"
        )
