"""``verl.plugins`` entry point ``flexrec_cpu``: CPU support for verl's PPO trainer.

verl imports this in every process that imports ``verl``. It must stay cheap and must not
change anything for GPU users, so it does two things only:

* always: adds the platform name ``cpu`` to ``PlatformRegistry`` (a new name, never
  auto-detected), the rollout name ``hf_cpu`` to ``RolloutReplicaRegistry`` (a lazy loader) and,
  once verl loads its V1 trainer, the trainer mode ``flexrec_sync_dump`` (:mod:`.advantage_dump`);
* only in processes started with ``VERL_PLATFORM=cpu``: registers the FSDP engines for device
  ``cpu`` and the worker-side ``hf_cpu`` rollout class. These imports are heavy (FSDP,
  transformers), hence the gate.

Everything is idempotent (a second import re-registers nothing).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def register_all() -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from ..integration.post_import import when_imported
    from .advantage_dump import FLEXREC_TRAINER_MODULE, register_dump_trainer
    from .platform import cpu_platform_selected, register_platform
    from .rollout import ROLLOUT_NAME, load_replica_class

    register_platform()
    # the advantage-dump trainer subclasses FlexRec's flexrec_sync trainer: registered right after
    # that module is loaded (which FlexRec's entry point arranges for when verl loads its V1 trainer)
    # (skipped when that module's own import is what loads verl: too late to hook, and only
    # processes that import verl first - all of verl's - run a trainer)
    pending = sys.modules.get(FLEXREC_TRAINER_MODULE)
    if pending is None or hasattr(pending, "FlexRecTrainerSync"):
        when_imported(FLEXREC_TRAINER_MODULE, register_dump_trainer, loaded_marker="FlexRecTrainerSync")
    if ROLLOUT_NAME not in RolloutReplicaRegistry._registry:
        RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica_class)
    if cpu_platform_selected():
        from .engine import register_engines
        from .patches import patch_process_group_init, register_rollout_adapter

        register_engines()
        register_rollout_adapter()
        patch_process_group_init()


try:
    register_all()
except Exception:
    logger.exception("verl-flexrec: registering CPU support with verl failed")
    raise
