#!/usr/bin/env bash
# Try FlexRec without a GPU: verl's real PPO trainer with FlexRec's reward manager, estimator and
# trainer seam, a tiny Qwen2 and CPU rollouts (config: tiny_cpu.yaml in `python -m verl_flexrec recipes-path`).
#
#   bash recipes/flexrec/run_tiny_cpu.sh [WORKDIR] [hydra overrides...]
#
# The same as `python -m verl_flexrec.cpu.tiny_job [WORKDIR] [overrides...]`, which works from any
# install (see its docstring). Builds fixture data + tokenizer + warm-started tiny model into
# WORKDIR (default ./tiny_cpu_run), then runs `python -m verl.trainer.main_ppo` there: 3 steps,
# validation, a checkpoint, console and tensorboard logs (WORKDIR/tensorboard), per-token advantage
# dumps (WORKDIR/rollouts). TINY_CPU_DATASET=kuairec uses the KuaiRec fixture instead of
# MovieLens-1M; TINY_CPU_SKIP_SETUP=1 reuses WORKDIR's data and model; PYTHON picks the interpreter.
# RUN_NAME names the run and its checkpoint folder (WORKDIR/checkpoints/RUN_NAME; default
# tiny_cpu_<UTC time>, a fresh run): after a crash, the same command with RUN_NAME=<printed name>
# resumes from the last complete checkpoint (resume_mode=auto).
# TRAIN_FILE + VAL_FILE (verl parquet, e.g. from `python -m verl_flexrec.quickstart`) replace the
# fixture with seeded subsets of your data; CKPT_DIR moves the checkpoints (default: WORKDIR).
set -euo pipefail
exec "${PYTHON:-python}" -m verl_flexrec.cpu.tiny_job "$@"
