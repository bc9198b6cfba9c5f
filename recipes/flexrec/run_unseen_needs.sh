#!/usr/bin/env bash
# Generalisation to unseen needs: train on Maximizing Interest only, evaluate on Explore New
# Topics and Trend Promotion (the validation set holds only the unseen needs; verl logs
# val-core/flexrec/<dataset>/... and the ndcg@5/ndcg@10/recall@5/mrr@5 val-aux metrics).
#
#   bash recipes/flexrec/run_unseen_needs.sh kuairec|ml-1m [hydra overrides...]
#
# GPUs assumed: 4 x A100/H100 80 GB. Expected time (estimate, not measured): as
# run_single_need.sh (~2-3 min per step, 5 epochs over the Maximizing Interest rows).
# Checkpoint: $CKPT_DIR/flexrec_<dataset>_unseen_needs[_<baseline>]/global_step_*/actor
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATASET=${1:?usage: run_unseen_needs.sh kuairec|ml-1m [overrides...]}
shift
[[ $DATASET == esci ]] && die "ESCI has a single need (product_search)"

OUT="$DATA_DIR/$DATASET/unseen_needs"
prepare_data "$DATASET" "$OUT" --train-needs maximize_interest --test-needs explore_new_topics,trend_promotion
train "flexrec_${DATASET}_unseen_needs" "$OUT/train.parquet" "$OUT/test.parquet" "$@"
