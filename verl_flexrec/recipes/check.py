"""Compose a recipe and run verl's own checks on it, without Ray, GPUs or data.

What ``python -m verl.trainer.main_ppo`` does before it starts anything (Hydra composition in
struct mode, so an unknown key fails; ``auto_set_device``; ``validate_config``), plus what would
otherwise fail later inside a worker: the data files and the model path are set (no ``???`` left
under ``data`` or ``actor_rollout_ref.model``), verl's config dataclasses (actor, rollout,
algorithm), :class:`~verl_flexrec.config.FlexRecConfig` for the ``algorithm.flexrec`` block, and
that every name the config selects is registered (reward manager, advantage estimator, V1
trainer). Command line::

    python -m verl_flexrec check-config [--config-path DIR] [--config-name NAME] [overrides...]

``--config-path`` defaults to the packaged recipes (:func:`verl_flexrec.recipes.config_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import config_dir

__all__ = ["check_config", "compose"]

REQUIRED_SECTIONS = ("data.", "actor_rollout_ref.model.")


def compose(name: str, overrides: Sequence[str] = (), *, path: str | Path | None = None):
    """The composed config ``name`` of folder ``path`` (default: the packaged recipes)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    folder = Path(path).resolve() if path is not None else config_dir()
    with initialize_config_dir(config_dir=str(folder), version_base=None):
        return hydra_compose(config_name=name, overrides=list(overrides))


def check_config(cfg) -> list[str]:
    """Raise on the first problem verl (or FlexRec) would raise on; return what was checked."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.utils.device import auto_set_device

    import verl_flexrec.register  # noqa: F401  (what the verl.plugins entry point loads in every process)

    from ..config import FlexRecConfig

    done = []
    # the values a launcher must set (verl's own config leaves ??? in sections that are switched off)
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k.startswith(REQUIRED_SECTIONS))
    if missing:
        raise ValueError(f"mandatory value(s) not set (???): {', '.join(missing)}; pass them as overrides")
    auto_set_device(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    done.append("verl validate_config")
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    flexrec = algorithm.pop("flexrec", None)
    omega_conf_to_dataclass(OmegaConf.create(algorithm))
    done.append("verl actor/rollout/algorithm dataclasses")
    if flexrec is not None:
        FlexRecConfig.from_any(flexrec)
        done.append("algorithm.flexrec")
    get_reward_manager_cls(cfg.reward.reward_manager.name)
    core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    names = [f"reward manager {cfg.reward.reward_manager.name}", f"estimator {cfg.algorithm.adv_estimator}"]
    if cfg.trainer.use_v1:
        from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

        get_trainer_cls(cfg.trainer.v1.trainer_mode)
        names.append(f"trainer {cfg.trainer.v1.trainer_mode}")
    done.append("registered: " + ", ".join(names))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m verl_flexrec check-config", description=__doc__.split("\n\n")[0])
    p.add_argument("--config-path", default=None, help="config folder (default: the packaged recipes)")
    p.add_argument("--config-name", default="flexrec_trainer", help="config to compose (default: flexrec_trainer)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as given to verl.trainer.main_ppo")
    args = p.parse_args(argv)
    folder = Path(args.config_path).resolve() if args.config_path else config_dir()
    try:
        cfg = compose(args.config_name, args.overrides, path=folder)
        done = check_config(cfg)
    except Exception as e:  # noqa: BLE001  (hydra, omegaconf and verl raise many types; show the message)
        print(f"error: {args.config_name} in {folder}: {type(e).__name__}: {e}")
        return 1
    print(f"ok: {args.config_name} ({folder}) composes and passes " + "; ".join(done))
    return 0
