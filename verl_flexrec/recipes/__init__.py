"""FlexRec's Hydra recipes for verl, shipped inside the package.

``config/`` holds ``flexrec_base.yaml`` (the seam), ``flexrec_trainer.yaml`` (the paper's GPU
settings), ``baseline/*.yaml`` and ``tiny_cpu.yaml`` (the CPU job). From any install::

    python -m verl.trainer.main_ppo --config-path "$(python -m verl_flexrec recipes-path)" \\
        --config-name flexrec_trainer data.train_files=... data.val_files=...

or compose them into a config of your own with the search path
``pkg://verl_flexrec.recipes.config`` (next to ``pkg://verl.trainer.config``) and
``defaults: [ppo_trainer, flexrec_base, _self_]``. ``python -m verl_flexrec check-config`` composes
a config and runs verl's own validation on it without starting anything (:mod:`.check`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_PACKAGE", "config_dir"]

CONFIG_PACKAGE = "verl_flexrec.recipes.config"


def config_dir() -> Path:
    """The folder holding the recipe YAML files (pass it to ``--config-path``)."""
    return Path(__file__).resolve().parent / "config"
