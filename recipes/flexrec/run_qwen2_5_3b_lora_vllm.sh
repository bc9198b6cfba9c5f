#!/usr/bin/env bash
# FlexRec with Qwen2.5-3B-Instruct on ONE GPU of 24-80 GB: LoRA (rank 64) on the actor, the frozen
# base as reference, vLLM rollouts taking 40 % of the GPU. Memory (bf16): base weights ~6 GB in the
# actor + ~6 GB in vLLM, LoRA parameters and their AdamW state < 1 GB, activations bounded by the
# use_dynamic_bsz token budget. On a 24 GB card lower ACTOR_TOKENS_PER_SEQ to 1 if it runs out.
#
#   bash recipes/flexrec/run_qwen2_5_3b_lora_vllm.sh SETTING DATASET [hydra overrides...]
#
# The settings and every other variable are those of run_qwen2_5_3b_vllm.sh; these change defaults.
set -euo pipefail

export N_GPUS=${N_GPUS:-1}
export LORA_RANK=${LORA_RANK:-64}
export LORA_ALPHA=${LORA_ALPHA:-32}
export LR=${LR:-1e-5}                  # LoRA adapters take a larger step than full fine-tuning
export TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-16}
export PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-8}
export GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.4}
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen2_5_3b_vllm.sh" "$@"
