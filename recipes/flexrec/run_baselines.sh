#!/usr/bin/env bash
# The paper's RL baselines, each one flag (BASELINE=...) on the same recipe and data:
#   rec_r1          Rec-R1: sequence reward (format bonus + NDCG), GRPO advantage on every token
#   rank_grpo       Rank-GRPO: rank reward DCG@k:K / IDCG per item, per-rank normalisation
#   no_uncertainty  FlexRec without the uncertainty scale ("raw critic")
#
#   bash recipes/flexrec/run_baselines.sh run_qwen2_5_3b_vllm.sh sparse_critic kuairec [hydra overrides...]
#   BASELINE=rec_r1 bash recipes/flexrec/run_qwen2_5_3b_vllm.sh single_need ml-1m      # one baseline
#
# Each baseline is its own run (<RUN_NAME or the default name>_<baseline>, its own checkpoints),
# one after the other on the same GPUs; time: 3 x the script's training time.
set -euo pipefail
SCRIPT=${1:?usage: run_baselines.sh run_qwen2_5_3b_vllm.sh|run_qwen2_5_3b_lora_vllm.sh|... SETTING DATASET [overrides...]}
shift
for baseline in rec_r1 rank_grpo no_uncertainty; do
  BASELINE=$baseline bash "$(dirname "${BASH_SOURCE[0]}")/$SCRIPT" "$@"
done
