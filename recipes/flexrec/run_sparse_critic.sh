#!/usr/bin/env bash
# Sparse feedback (10 % of training interactions observed) with the uncertainty critic:
# data -> critic train -> critic evaluate (calibration report) -> fill unobserved gains -> RL,
# where each rollout's advantages are scaled by 1/(u+eps) (BASELINE=no_uncertainty turns it off).
#
#   bash recipes/flexrec/run_sparse_critic.sh kuairec|ml-1m [hydra overrides...]
#
# GPUs assumed: 4 x A100/H100 80 GB for RL; the critic trains on CPU (or one GPU) in minutes.
# Expected time (estimate, not measured): critic < 30 min on CPU; RL as run_single_need.sh.
# Checkpoint: $CKPT_DIR/flexrec_<dataset>_sparse[_<baseline>]/global_step_*/actor
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATASET=${1:?usage: run_sparse_critic.sh kuairec|ml-1m [overrides...]}
shift
[[ $DATASET == esci ]] && die "ESCI has no interaction matrix for the critic"
NEED=${NEED:-maximize_interest}

OUT="$DATA_DIR/$DATASET/sparse_$NEED"
prepare_data "$DATASET" "$OUT" --needs "$NEED" --sparse-frac 0.1
CRITIC="$OUT/critic.pt"
if [[ $DRY_RUN == 1 || ! -f $CRITIC ]]; then
  run "$PYTHON" -m verl_flexrec.critic train --data "$OUT/interactions.parquet" "$OUT/train.parquet" --out "$CRITIC"
  run "$PYTHON" -m verl_flexrec.critic evaluate --critic "$CRITIC" --data "$OUT/train.parquet" --out-dir "$OUT/critic_report"
fi
run "$PYTHON" -m verl_flexrec.critic fill --critic "$CRITIC" --data "$OUT/train.parquet" --out "$OUT/train_filled.parquet"
train "flexrec_${DATASET}_sparse" "$OUT/train_filled.parquet" "$OUT/test.parquet" "$@"
