#!/usr/bin/env bash
# FlexRec on GPUs with Qwen2.5-3B-Instruct: verl's PPO trainer (V1 sync, FSDP actor) with FlexRec's
# reward manager, estimator and trainer seam; rollouts by vLLM (INFER_BACKEND=sglang: SGLang).
#
#   bash recipes/flexrec/run_qwen2_5_3b_vllm.sh SETTING DATASET [hydra overrides...]
#
#   SETTING  single_need    train and evaluate on one need (NEED)
#            unseen_needs   train on Maximizing Interest, validate on Explore New Topics + Trend Promotion
#            multi_need     one universal model for every need
#            sparse_critic  10 % observed feedback: critic train / evaluate / fill, then RL
#   DATASET  kuairec | ml-1m | esci (esci: single_need only)
#
# Everything else is an environment variable (below, with its default). Examples:
#   LOGGER=console,wandb bash recipes/flexrec/run_qwen2_5_3b_vllm.sh sparse_critic kuairec
#   RUN_NAME=flexrec_kuairec_sparse_20261205_101500 bash ...   # resume that run after a crash
#   bash recipes/flexrec/run_qwen2_5_3b_lora_vllm.sh single_need ml-1m   # LoRA on one GPU
#   DRY_RUN=1 bash recipes/flexrec/run_qwen2_5_3b_vllm.sh single_need kuairec   # print the commands
#
# Steps: epochs x train rows / TRAIN_BATCH_SIZE (the script prints the count after data prep).
# No GPU run backs a time per step yet. Install: pip install -r recipes/flexrec/REQUIRED_VERL.txt
# "verl[vllm]" verl-flexrec flash-attn --no-build-isolation (without flash-attn: ATTN_IMPL=sdpa).
set -euo pipefail

# ---- model, hardware, backend -------------------------------------------------------------------
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}   # HF id or local folder of the policy
TOKENIZER=${TOKENIZER:-qwen2}          # prompt-length measurement: qwen2 (Qwen2/2.5 vocabulary), smollm2, or a tokenizer path/id
INFER_BACKEND=${INFER_BACKEND:-vllm}   # vllm | sglang   (hf_cpu: run_tiny_cpu.sh)
N_GPUS=${N_GPUS:-4}                    # GPUs per node (the paper: 4 x A100)
NNODES=${NNODES:-1}
ROLLOUT_TP=${ROLLOUT_TP:-1}            # rollout tensor parallelism
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}   # rollout engine's share of each GPU
ATTN_IMPL=${ATTN_IMPL:-auto}           # auto (flash_attention_2 if flash-attn imports, else sdpa) | flash_attention_2 | sdpa
LORA_RANK=${LORA_RANK:-0}              # 0 = full fine-tuning; e.g. 64 = LoRA (run_qwen2_5_3b_lora_vllm.sh)
LORA_ALPHA=${LORA_ALPHA:-32}
# ---- batch, lengths, optimiser -------------------------------------------------------------------
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-32}       # prompts per step
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-16} # prompts per policy update (2 updates per step)
ROLLOUT_N=${ROLLOUT_N:-8}                      # rollouts per prompt
LR=${LR:-1e-6}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-5}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-auto}   # auto = measured on the data (fits every row); a number is checked, never filtered
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-1024}
# use_dynamic_bsz token budgets per GPU = (prompt + response length) x these
ACTOR_TOKENS_PER_SEQ=${ACTOR_TOKENS_PER_SEQ:-2}
INFER_TOKENS_PER_SEQ=${INFER_TOKENS_PER_SEQ:-4}
# ---- run, logging, checkpoints ---------------------------------------------------------------------
RUN_NAME=${RUN_NAME:-}                 # default: flexrec_<dataset>_<setting>_<UTC time>, a fresh run; the same name resumes
PROJECT_NAME=${PROJECT_NAME:-flexrec}
LOGGER=${LOGGER:-console,tensorboard}  # any of console, tensorboard, wandb (comma-separated)
CKPT_DIR=${CKPT_DIR:-$PWD/checkpoints} # checkpoints of a run: $CKPT_DIR/$RUN_NAME
MAX_ACTOR_CKPT_TO_KEEP=${MAX_ACTOR_CKPT_TO_KEEP:-2}   # a 3B actor with AdamW state is ~37 GB per save
SAVE_FREQ=${SAVE_FREQ:-25}
TEST_FREQ=${TEST_FREQ:-25}
VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN:-true}
# ---- data and method -----------------------------------------------------------------------------
DATA_DIR=${DATA_DIR:-$PWD/data}        # prepared parquet: $DATA_DIR/<dataset>/<setting>
RAW_DIR=${RAW_DIR:-$DATA_DIR/raw}      # official raw files (downloaded here unless DOWNLOAD=0)
DOWNLOAD=${DOWNLOAD:-1}
NEED=${NEED:-}                         # single_need / sparse_critic: maximize_interest (ESCI: product_search), explore_new_topics, trend_promotion
BASELINE=${BASELINE:-none}             # none (FlexRec) | rec_r1 | rank_grpo | no_uncertainty
PYTHON=${PYTHON:-python}               # interpreter with verl-flexrec installed
DRY_RUN=${DRY_RUN:-0}                  # 1 = print every command instead of running it

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
flexrec_main "$@"
