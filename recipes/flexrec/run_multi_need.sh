#!/usr/bin/env bash
# One universal model for every need: training contexts get a need drawn uniformly (a uniform
# mix over (user, need)); the test set has one row per (context, need).
#
#   bash recipes/flexrec/run_multi_need.sh kuairec|ml-1m [hydra overrides...]
#
# GPUs assumed: 4 x A100/H100 80 GB. Expected time (estimate, not measured): ~2-3 min per step;
# validation covers 3 needs, so each test_freq adds ~3x the single-need validation time.
# Checkpoint: $CKPT_DIR/flexrec_<dataset>_all_needs[_<baseline>]/global_step_*/actor
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATASET=${1:?usage: run_multi_need.sh kuairec|ml-1m [overrides...]}
shift
[[ $DATASET == esci ]] && die "ESCI has a single need (product_search)"

OUT="$DATA_DIR/$DATASET/all_needs"
prepare_data "$DATASET" "$OUT" --needs all
train "flexrec_${DATASET}_all_needs" "$OUT/train.parquet" "$OUT/test.parquet" "$@"
