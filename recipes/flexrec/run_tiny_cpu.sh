#!/usr/bin/env bash
# Try FlexRec without a GPU: verl's real PPO trainer with FlexRec's reward manager, estimator and
# trainer seam, a tiny Qwen2 and CPU rollouts (config: recipes/flexrec/config/tiny_cpu.yaml).
#
#   bash recipes/flexrec/run_tiny_cpu.sh [WORKDIR] [hydra overrides...]
#
# Builds fixture data + tokenizer + warm-started tiny model into WORKDIR (default ./tiny_cpu_run),
# then runs `python -m verl.trainer.main_ppo` there: 3 steps, validation, a checkpoint, console
# and tensorboard logs (WORKDIR/tensorboard), per-token advantage dumps (WORKDIR/rollouts).
# TINY_CPU_DATASET=kuairec uses the KuaiRec fixture instead of MovieLens-1M; TINY_CPU_SKIP_SETUP=1
# reuses WORKDIR's data and model; PYTHON picks the interpreter. TRAIN_FILE + VAL_FILE (verl parquet;
# `python -m verl_flexrec.quickstart` passes its critic-filled training rows and its test rows)
# replace the fixture with seeded subsets of your data; CKPT_DIR moves the checkpoints (default: WORKDIR).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORKDIR="${1:-$PWD/tiny_cpu_run}"
[ $# -gt 0 ] && shift
mkdir -p "$WORKDIR"
WORKDIR="$(cd "$WORKDIR" && pwd)"
PY="${PYTHON:-python}"

DATA_ARGS=(--dataset "${TINY_CPU_DATASET:-ml-1m}")
EXTRA=()
if [ -n "${TRAIN_FILE:-}" ]; then
  # prepared data instead of the fixture (the quickstart's ML-100k): 20-item histories make
  # prompts of up to ~2.1k tiny-tokenizer tokens
  DATA_ARGS=(--train-file "$TRAIN_FILE" --val-file "${VAL_FILE:?VAL_FILE goes with TRAIN_FILE}")
  EXTRA=(data.max_prompt_length="${TINY_CPU_MAX_PROMPT:-2560}")
fi
if [ "${TINY_CPU_SKIP_SETUP:-0}" != "1" ]; then
  "$PY" -m verl_flexrec.cpu.tiny_setup --workdir "$WORKDIR" "${DATA_ARGS[@]}"
fi

cd "$WORKDIR"
export VERL_PLATFORM=cpu TENSORBOARD_DIR="$WORKDIR/tensorboard"
exec "$PY" -m verl.trainer.main_ppo \
  --config-path="$REPO/recipes/flexrec/config" --config-name=tiny_cpu \
  data.train_files="$WORKDIR/data/train.parquet" data.val_files="$WORKDIR/data/test.parquet" \
  actor_rollout_ref.model.path="$WORKDIR/model" \
  trainer.default_local_dir="${CKPT_DIR:-$WORKDIR}/checkpoints" trainer.rollout_data_dir="$WORKDIR/rollouts" \
  ${EXTRA[@]+"${EXTRA[@]}"} "$@"
