"""Register FlexRec's names in verl's registries (the ``verl.plugins`` entry point).

verl imports this module in every process that imports ``verl`` (driver, TaskRunner, reward-loop
and agent-loop workers). verl swallows entry-point errors at DEBUG level, so a failure here is
also logged at ERROR before it propagates; ``python -m verl_flexrec doctor`` checks the result.
Registration is idempotent: importing twice, or under ``VERL_USE_EXTERNAL_MODULES`` as well,
binds the same objects again.
"""

from __future__ import annotations

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
    register_adv_est("flexrec")(compute_flexrec_advantage)


try:
    register_all()
except Exception:  # noqa: BLE001 - re-raised; logged loudly because verl hides plugin errors
    logger.exception("verl-flexrec: registering FlexRec with verl failed; run `python -m verl_flexrec doctor`")
    raise
