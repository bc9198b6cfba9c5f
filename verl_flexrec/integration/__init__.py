"""verl seams: the only modules that import verl. ``verl_flexrec.register`` imports them and
binds FlexRec's names; this package's ``__init__`` stays import-free so checks can read
:data:`REGISTERED_NAMES` without registering anything."""

# registry -> names FlexRec adds; `python -m verl_flexrec doctor` checks each one.
REGISTERED_NAMES: dict[str, tuple[str, ...]] = {
    "reward_manager": ("flexrec",),
    "adv_estimator": ("flexrec",),
    # verl V1 trainer registry (trainer.v1.trainer_mode); registered when verl loads verl.trainer.ppo.v1
    "trainer": ("flexrec_sync",),
}
