#!/usr/bin/env bash
# FlexRec, one need: train and evaluate on the same need.
#
#   bash recipes/flexrec/run_single_need.sh kuairec|ml-1m|esci [hydra overrides...]
#   NEED=explore_new_topics bash recipes/flexrec/run_single_need.sh kuairec
#
# NEED: maximize_interest (default), explore_new_topics, trend_promotion; ESCI: product_search.
# GPUs assumed: 4 x A100/H100 80 GB (N_GPUS=4; Qwen2.5-3B, FSDP actor, vLLM TP=1, ref offloaded).
# Expected time (estimate, not measured): ~2-3 min per step (32 prompts x 8 rollouts, <=1k
#   response tokens); steps = 5 epochs x train rows / 32, e.g. ~1,000 rows -> ~160 steps -> 6-8 h.
#   Data prep: minutes (downloads: ML-1M 6 MB, KuaiRec ~430 MB, ESCI ~1 GB).
# Checkpoint: $CKPT_DIR/flexrec_<dataset>_<need>[_<baseline>]/global_step_*/actor
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATASET=${1:?usage: run_single_need.sh kuairec|ml-1m|esci [overrides...]}
shift
default_need=maximize_interest
[[ $DATASET == esci ]] && default_need=product_search
NEED=${NEED:-$default_need}

OUT="$DATA_DIR/$DATASET/$NEED"
prepare_data "$DATASET" "$OUT" --needs "$NEED"
train "flexrec_${DATASET}_${NEED}" "$OUT/train.parquet" "$OUT/test.parquet" "$@"
