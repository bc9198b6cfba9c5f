#!/usr/bin/env bash
# The paper's RL baselines, each one flag (BASELINE=...) on the same recipe and data:
#   rec_r1          Rec-R1: sequence reward (format bonus + NDCG), GRPO advantage on every token
#   rank_grpo       Rank-GRPO: rank reward DCG@k:K / IDCG per item, per-rank normalisation
#   no_uncertainty  FlexRec without the uncertainty scale ("raw critic")
#
#   bash recipes/flexrec/run_baselines.sh run_sparse_critic.sh kuairec [hydra overrides...]
#   BASELINE=rec_r1 bash recipes/flexrec/run_single_need.sh ml-1m      # one baseline
#
# GPUs assumed: as the setting's script; time: 3 x that script's training time.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTING=${1:?usage: run_baselines.sh run_single_need.sh|run_sparse_critic.sh|... DATASET [overrides...]}
shift
for baseline in rec_r1 rank_grpo no_uncertainty; do
  BASELINE=$baseline bash "$FLEXREC_ROOT/recipes/flexrec/$SETTING" "$@"
done
