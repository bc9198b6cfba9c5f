"""Register FlexRec's names in verl's registries (the ``verl.plugins`` entry point).

verl imports this module in every process that imports ``verl`` (driver, TaskRunner, reward-loop
and agent-loop workers). verl swallows entry-point errors at DEBUG level, so a failure here is
also logged at ERROR before it propagates; ``python -m verl_flexrec doctor`` checks the result.
Registration is idempotent: importing twice, or under ``VERL_USE_EXTERNAL_MODULES`` as well,
binds the same objects again.

A verl that ships its own ``flexrec`` estimator (the upstream patch series, docs/upstreaming.md)
keeps it: the plugin registers its estimator only where verl has none, and the reward manager and
trainer still register.

The ``flexrec_sync`` trainer subclasses verl's V1 trainer, whose module pulls in Ray, TransferQueue
and the training engines; it is registered lazily, when verl itself imports
``verl.trainer.ppo.v1`` (``TaskRunnerV1.run`` does, just before ``get_trainer_cls``), through a
post-import hook (:mod:`verl_flexrec.integration.post_import`), so ``import verl`` stays as cheap
as before.
"""

from __future__ import annotations

import importlib
import logging

__all__ = ["REGISTERED_NAMES", "register_all"]

logger = logging.getLogger(__name__)

from .integration import REGISTERED_NAMES  # noqa: E402 - re-exported for users


def register_all() -> None:
    from verl.experimental.reward_loop.reward_manager import register as register_reward_manager
    from verl.trainer.ppo.core_algos import register_adv_est

    from .integration.estimator import compute_flexrec_advantage
    from .integration.reward_manager import FlexRecRewardManager

    register_reward_manager("flexrec")(FlexRecRewardManager)
    upstream = registered_flexrec_estimator()
    if upstream is None or upstream is compute_flexrec_advantage:
        register_adv_est("flexrec")(compute_flexrec_advantage)
    else:
        logger.info("verl-flexrec: verl has its own `flexrec` estimator (%s.%s); keeping it",
                    upstream.__module__, getattr(upstream, "__qualname__", upstream))
    register_trainer_lazily()


def registered_flexrec_estimator():
    """The function verl's estimator registry holds under ``flexrec`` (None: nothing yet)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    return ADV_ESTIMATOR_REGISTRY.get("flexrec")


V1_TRAINER_PACKAGE = "verl.trainer.ppo.v1"
TRAINER_MODULE = "verl_flexrec.integration.trainer"


def _import_trainer(_v1_package=None) -> None:
    # The trainer module registers `flexrec_sync` at import. If it is the module whose import
    # pulled in verl's V1 package (mid-import here), import_module returns it and it registers
    # itself when its body finishes.
    importlib.import_module(TRAINER_MODULE)


def register_trainer_lazily() -> None:
    """Register the ``flexrec_sync`` trainer as soon as verl's V1 trainer package is loaded."""
    from .integration.post_import import when_imported

    when_imported(V1_TRAINER_PACKAGE, _import_trainer, loaded_marker="PPOTrainerSync")


try:
    register_all()
except Exception:  # noqa: BLE001 - re-raised; logged loudly because verl hides plugin errors
    logger.exception("verl-flexrec: registering FlexRec with verl failed; run `python -m verl_flexrec doctor`")
    raise
