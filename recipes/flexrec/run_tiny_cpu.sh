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
# reuses WORKDIR's data and model; PYTHON picks the interpreter.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORKDIR="${1:-$PWD/tiny_cpu_run}"
[ $# -gt 0 ] && shift
mkdir -p "$WORKDIR"
WORKDIR="$(cd "$WORKDIR" && pwd)"
PY="${PYTHON:-python}"

if [ "${TINY_CPU_SKIP_SETUP:-0}" != "1" ]; then
  "$PY" -m verl_flexrec.cpu.tiny_setup --workdir "$WORKDIR" --dataset "${TINY_CPU_DATASET:-ml-1m}"
fi

cd "$WORKDIR"
export VERL_PLATFORM=cpu TENSORBOARD_DIR="$WORKDIR/tensorboard"
exec "$PY" -m verl.trainer.main_ppo \
  --config-path="$REPO/recipes/flexrec/config" --config-name=tiny_cpu \
  data.train_files="$WORKDIR/data/train.parquet" data.val_files="$WORKDIR/data/test.parquet" \
  actor_rollout_ref.model.path="$WORKDIR/model" \
  trainer.default_local_dir="$WORKDIR/checkpoints" trainer.rollout_data_dir="$WORKDIR/rollouts" \
  "$@"
