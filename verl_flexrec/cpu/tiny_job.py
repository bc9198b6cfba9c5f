"""The tiny FlexRec job on a CPU: verl's real PPO trainer with a tiny warm-started Qwen2.

    python -m verl_flexrec.cpu.tiny_job [WORKDIR] [hydra overrides...] [--check]

(``bash recipes/flexrec/run_tiny_cpu.sh`` in a clone runs this.) Builds fixture data, tokenizer and
model into WORKDIR (default ``./tiny_cpu_run``; :mod:`.tiny_setup`), then replaces this process
with ``python -m verl.trainer.main_ppo`` run in WORKDIR on the packaged ``tiny_cpu`` recipe: 3
steps, validation, a checkpoint (a rerun with the same ``RUN_NAME`` resumes from it), console and
TensorBoard logs (``WORKDIR/tensorboard``), per-token advantage dumps (``WORKDIR/rollouts``).
``--check`` stops before the trainer: it composes the very config the run would use and runs
verl's checks on it (:mod:`verl_flexrec.recipes.check`).

Settings come from the environment (so a shell script or the quickstart can pass them through):

``TINY_CPU_DATASET``     ``kuairec`` uses the KuaiRec fixture instead of MovieLens-1M
``TINY_CPU_SKIP_SETUP``  ``1`` reuses WORKDIR's data and model
``TRAIN_FILE``, ``VAL_FILE``  your verl parquet instead of the fixture (seeded subsets of it; e.g.
                         the quickstart's ML-100k), with ``TINY_CPU_MAX_PROMPT`` prompt tokens
                         (default 2560: 20-item histories make prompts of up to ~2.1k tokens)
``CKPT_DIR``             where ``checkpoints/<RUN_NAME>/`` go (default: WORKDIR)
``RUN_NAME``             the run's name (verl's ``trainer.experiment_name``) and its checkpoint
                         folder; default ``tiny_cpu_<UTC time>``, a fresh run. verl's
                         ``resume_mode=auto`` resumes only a run of the same name: after a crash,
                         rerun with the ``RUN_NAME`` the first run printed.
``TINY_CPU_SFT_STEPS``   warm-start steps (default: 300)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..recipes import config_dir

CONFIG_NAME = "tiny_cpu"


def parse(argv: list[str]) -> tuple[Path, list[str], bool]:
    """(WORKDIR, hydra overrides, --check) from the command line.

    As in the shell script, the first argument is WORKDIR unless it looks like an override or a flag.
    """
    check = "--check" in argv
    rest = [a for a in argv if a != "--check"]
    workdir = Path("tiny_cpu_run")
    if rest and "=" not in rest[0] and not rest[0].startswith("-"):
        workdir, rest = Path(rest[0]), rest[1:]
    return workdir.resolve(), rest, check


def run_name(env: dict) -> str:
    """``RUN_NAME`` from the environment, else a fresh timestamped name (a new run never resumes an old one)."""
    name = env.get("RUN_NAME") or time.strftime("tiny_cpu_%Y%m%d_%H%M%S", time.gmtime())
    if "/" in name or name in (".", ".."):
        raise SystemExit(f"tiny_job: RUN_NAME={name!r} must be a plain folder name")
    return name


def overrides_for(workdir: Path, env: dict, name: str = "tiny_cpu") -> list[str]:
    """The launcher's overrides: where the data, model, checkpoints (one folder per run name) and rollouts are."""
    out = [f"data.train_files={workdir / 'data' / 'train.parquet'}", f"data.val_files={workdir / 'data' / 'test.parquet'}",
           f"actor_rollout_ref.model.path={workdir / 'model'}",
           f"trainer.experiment_name={name}",
           f"trainer.default_local_dir={Path(env.get('CKPT_DIR') or workdir) / 'checkpoints' / name}",
           f"trainer.rollout_data_dir={workdir / 'rollouts'}"]
    if env.get("TRAIN_FILE"):
        out.append(f"data.max_prompt_length={env.get('TINY_CPU_MAX_PROMPT') or 2560}")
    return out


def setup(workdir: Path, env: dict) -> None:
    """Data, tokenizer and warm-started model into ``workdir`` (:mod:`.tiny_setup`)."""
    from .tiny_setup import main as setup_main

    if env.get("TRAIN_FILE"):
        if not env.get("VAL_FILE"):
            raise SystemExit("tiny_job: VAL_FILE goes with TRAIN_FILE")
        args = ["--train-file", env["TRAIN_FILE"], "--val-file", env["VAL_FILE"]]
    else:
        args = ["--dataset", env.get("TINY_CPU_DATASET") or "ml-1m"]
    if env.get("TINY_CPU_SFT_STEPS"):
        args += ["--sft-steps", env["TINY_CPU_SFT_STEPS"]]
    code = setup_main(["--workdir", str(workdir), *args])
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    workdir, user_overrides, check = parse(list(sys.argv[1:] if argv is None else argv))
    env = dict(os.environ)
    workdir.mkdir(parents=True, exist_ok=True)
    if env.get("TINY_CPU_SKIP_SETUP", "0") != "1":
        setup(workdir, env)
    name = run_name(env)
    overrides = [*overrides_for(workdir, env, name), *user_overrides]
    os.environ.update(VERL_PLATFORM="cpu", TENSORBOARD_DIR=str(workdir / "tensorboard"))
    if check:
        from ..recipes.check import main as check_main

        return check_main(["--config-name", CONFIG_NAME, *overrides])
    print(f"[flexrec] run {name}: checkpoints in {Path(env.get('CKPT_DIR') or workdir) / 'checkpoints' / name}; "
          f"after a crash, rerun with RUN_NAME={name} to resume", file=sys.stderr)
    os.chdir(workdir)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={config_dir()}",
           f"--config-name={CONFIG_NAME}", *overrides]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)  # as the shell script's `exec`: the trainer keeps this process id
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
