# Shared by recipes/flexrec/run_*.sh: data preparation, checks and the verl launch.
# Source it after the script's environment block; do not run it. The settings (upper-case
# environment variables) are listed and defaulted at the top of run_qwen2_5_3b_vllm.sh.

set -euo pipefail

FLEXREC_RECIPES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLEXREC_ROOT=$(cd "$FLEXREC_RECIPES/../.." && pwd)

die() { echo "[flexrec] error: $*" >&2; exit 2; }
say() { echo "[flexrec] $*" >&2; }

# The Hydra recipes ship inside the package: the clone's copy next to these scripts, else the
# installed one (`python -m verl_flexrec recipes-path`, for scripts copied out of the clone).
CONFIG_DIR="$FLEXREC_ROOT/verl_flexrec/recipes/config"
if [[ ! -d $CONFIG_DIR ]]; then
  CONFIG_DIR=$("$PYTHON" -m verl_flexrec recipes-path) || die "verl_flexrec is not installed for $PYTHON"
fi

# run CMD...: execute, or print it (shell-quoted, one line) under DRY_RUN=1
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    say "$*"
    "$@"
  fi
}

# check_verl: the installed verl satisfies REQUIRED_VERL.txt (VERL_VERSION_CHECK=0 skips)
check_verl() {
  [[ $DRY_RUN == 1 || ${VERL_VERSION_CHECK:-1} == 0 ]] && return
  local spec
  spec=$(grep -v '^#' "$FLEXREC_RECIPES/REQUIRED_VERL.txt" | grep . | head -1)
  "$PYTHON" - "$spec" <<'EOF' || die "the installed verl does not satisfy $spec (REQUIRED_VERL.txt); pip install '$spec', or VERL_VERSION_CHECK=0 at your own risk"
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
req = Requirement(sys.argv[1])
sys.exit(0 if req.specifier.contains(version(req.name), prereleases=True) else 1)
EOF
}

# prepare_data DATASET OUT_DIR [data-prep flags...]: raw release -> verl parquet (skipped if present)
prepare_data() {
  local dataset=$1 out=$2 command
  shift 2
  case $dataset in
    kuairec) command=kuairec ;;
    ml-1m) command=movielens ;;
    esci) command=esci ;;
    *) die "unknown dataset '$dataset' (kuairec, ml-1m, esci)" ;;
  esac
  if [[ $DRY_RUN != 1 && -f $out/train.parquet && -f $out/test.parquet ]]; then
    say "using the prepared data in $out"
    return
  fi
  local download=()
  [[ $DOWNLOAD == 1 ]] && download=(--download)
  run "$PYTHON" -m verl_flexrec.data "$command" --raw-dir "$RAW_DIR" --out-dir "$out" "${download[@]}" "$@"
}

# prompt_length OUT_DIR: sets PROMPT_LEN, the data.max_prompt_length for this data, measured with
# $TOKENIZER; with a numeric MAX_PROMPT_LENGTH, checks it instead and stops naming how many rows it
# would drop (verl runs with filter_overlong_prompts=false: nothing is dropped silently)
prompt_length() {
  local out=$1 check=()
  [[ $MAX_PROMPT_LENGTH == auto ]] || check=(--max-prompt-length "$MAX_PROMPT_LENGTH")
  if [[ $DRY_RUN == 1 ]]; then
    run "$PYTHON" -m verl_flexrec.data prompt-lengths "$out" --tokenizer "$TOKENIZER" "${check[@]}"
    [[ $MAX_PROMPT_LENGTH == auto ]] && PROMPT_LEN=4096 || PROMPT_LEN=$MAX_PROMPT_LENGTH  # stands in for the measurement
    return 0
  fi
  PROMPT_LEN=$("$PYTHON" -m verl_flexrec.data prompt-lengths "$out" --tokenizer "$TOKENIZER" --no-progress "${check[@]}") \
    || die "prompt lengths of $out (see above); nothing was started"
  say "data.max_prompt_length=$PROMPT_LEN (measured with $TOKENIZER: fits every train and test row; details in $out/prep_info.json)"
}

# attention: ATTN_IMPL=auto picks flash_attention_2 when flash-attn imports, else sdpa. verl
# 0.9.1 loads the actor with override_config.attn_implementation, default flash_attention_2
# (workers/config/model.py), which raises ImportError without flash-attn. sdpa goes with
# use_remove_padding=false: packed sequences need flash-attn's varlen kernels.
attention() {
  local impl=$ATTN_IMPL
  if [[ $impl == auto ]]; then
    if [[ $DRY_RUN != 1 ]] && "$PYTHON" -c "import flash_attn" 2>/dev/null; then
      impl=flash_attention_2
    else
      impl=sdpa
      [[ $DRY_RUN == 1 ]] || say "flash-attn is not installed: the actor uses sdpa without padding removal (slower; pip install flash-attn --no-build-isolation for flash_attention_2)"
    fi
  elif [[ $impl == flash_attention_2 && $DRY_RUN != 1 ]]; then
    "$PYTHON" -c "import flash_attn" 2>/dev/null || die "ATTN_IMPL=flash_attention_2 but flash-attn does not import for $PYTHON (pip install flash-attn --no-build-isolation, or ATTN_IMPL=sdpa)"
  fi
  case $impl in
    flash_attention_2) echo "++actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2 actor_rollout_ref.model.use_remove_padding=true" ;;
    sdpa|eager) echo "++actor_rollout_ref.model.override_config.attn_implementation=$impl actor_rollout_ref.model.use_remove_padding=false" ;;
    *) die "ATTN_IMPL=$impl: use auto, flash_attention_2, sdpa or eager" ;;
  esac
}

# logger_list: LOGGER=console,wandb -> [console,wandb]
logger_list() {
  local name names=()
  IFS=',' read -r -a names <<<"$LOGGER"
  for name in "${names[@]}"; do
    case $name in
      console|tensorboard|wandb|mlflow|swanlab) ;;
      *) die "LOGGER=$LOGGER: '$name' is not one of console, tensorboard, wandb, mlflow, swanlab" ;;
    esac
  done
  [[ " ${names[*]} " == *" wandb "* && $DRY_RUN != 1 && -z ${WANDB_API_KEY:-} && ! -f ~/.netrc ]] \
    && say "LOGGER has wandb but WANDB_API_KEY is unset and there is no ~/.netrc: wandb will ask to log in"
  local IFS=,
  echo "[${names[*]}]"
}

# backend_overrides: rollout engine and LoRA (INFER_BACKEND, LORA_RANK)
backend_overrides() {
  case $INFER_BACKEND in
    vllm|sglang) echo "actor_rollout_ref.rollout.name=$INFER_BACKEND" ;;
    hf_cpu) die "INFER_BACKEND=hf_cpu is the CPU job: bash recipes/flexrec/run_tiny_cpu.sh" ;;
    *) die "INFER_BACKEND=$INFER_BACKEND: use vllm or sglang (hf_cpu: run_tiny_cpu.sh)" ;;
  esac
  if [[ $LORA_RANK != 0 ]]; then
    [[ $LORA_RANK =~ ^[0-9]+$ ]] || die "LORA_RANK=$LORA_RANK is not a number"
    # verl's LoRA path: the rollout engine loads the base weights from disk, adapters are synced
    echo "actor_rollout_ref.model.lora_rank=$LORA_RANK actor_rollout_ref.model.lora_alpha=$LORA_ALPHA" \
         "actor_rollout_ref.model.target_modules=all-linear actor_rollout_ref.rollout.load_format=safetensors" \
         "actor_rollout_ref.rollout.layered_summon=true"
  fi
}

# guard_resume DIR ARGS...: RUN_NAME resumes only the run it names, with the settings it started with
guard_resume() {
  local dir=$1 launch
  shift
  launch=$(printf '%s\n' "$@")
  [[ $DRY_RUN == 1 ]] && return
  if [[ -f $dir/flexrec_launch.txt ]]; then
    if [[ $(cat "$dir/flexrec_launch.txt") != "$launch" && ${RESUME_CHANGED:-0} != 1 ]]; then
      diff <(cat "$dir/flexrec_launch.txt") <(echo "$launch") >&2 || true
      die "RUN_NAME=$RUN_NAME was started with other settings (diff above: < then, > now). Use a new RUN_NAME, or RESUME_CHANGED=1 to resume it with the new ones"
    fi
    [[ -f $dir/latest_checkpointed_iteration.txt ]] \
      && say "resuming run $RUN_NAME from step $(cat "$dir/latest_checkpointed_iteration.txt") in $dir"
  fi
  mkdir -p "$dir"
  echo "$launch" >"$dir/flexrec_launch.txt"
}

# check_settings: the switches (backend, LoRA, attention, logger) before anything runs
check_settings() {
  BACKEND_ARGS=$(backend_overrides) || exit 2
  ATTN_ARGS=$(attention) || exit 2
  LOGGERS=$(logger_list) || exit 2
  [[ $MAX_PROMPT_LENGTH == auto || $MAX_PROMPT_LENGTH =~ ^[0-9]+$ ]] || die "MAX_PROMPT_LENGTH=$MAX_PROMPT_LENGTH: auto or a number"
}

# train LABEL TRAIN_FILES VAL_FILES PROMPT_LEN [hydra overrides...]: verl's PPO trainer with FlexRec
train() {
  local label=$1 train_files=$2 val_files=$3 prompt_len=$4
  shift 4
  [[ $BASELINE == none ]] || label="${label}_${BASELINE}"
  local name=${RUN_NAME:-${label}_$(date -u +%Y%m%d_%H%M%S)}
  [[ $BASELINE == none || -z ${RUN_NAME:-} || $name == *_"$BASELINE" ]] || name="${name}_${BASELINE}"
  [[ $name == */* ]] && die "RUN_NAME=$name must be a plain folder name"
  local rollout_tokens=$((prompt_len + MAX_RESPONSE_LENGTH))
  local args=(
    "baseline=$BASELINE"
    "data.train_files=$train_files"
    "data.val_files=$val_files"
    "data.max_prompt_length=$prompt_len"
    "data.max_response_length=$MAX_RESPONSE_LENGTH"
    "data.train_batch_size=$TRAIN_BATCH_SIZE"
    "actor_rollout_ref.model.path=$MODEL_PATH"
    "actor_rollout_ref.actor.optim.lr=$LR"
    "actor_rollout_ref.actor.ppo_mini_batch_size=$PPO_MINI_BATCH_SIZE"
    "actor_rollout_ref.actor.use_dynamic_bsz=true"
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$((rollout_tokens * ACTOR_TOKENS_PER_SEQ))"
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$((rollout_tokens * INFER_TOKENS_PER_SEQ))"
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$((rollout_tokens * INFER_TOKENS_PER_SEQ))"
    "actor_rollout_ref.rollout.n=$ROLLOUT_N"
    "actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
    "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEMORY_UTILIZATION"
    $BACKEND_ARGS
    $ATTN_ARGS
    "trainer.logger=$LOGGERS"
    "trainer.n_gpus_per_node=$N_GPUS"
    "trainer.nnodes=$NNODES"
    "trainer.project_name=$PROJECT_NAME"
    "trainer.experiment_name=$name"
    "trainer.default_local_dir=$CKPT_DIR/$name"
    "trainer.resume_mode=auto"
    "trainer.save_freq=$SAVE_FREQ"
    "trainer.test_freq=$TEST_FREQ"
    "trainer.total_epochs=$TOTAL_EPOCHS"
    "trainer.max_actor_ckpt_to_keep=$MAX_ACTOR_CKPT_TO_KEEP"
    "trainer.val_before_train=$VAL_BEFORE_TRAIN"
    "$@"
  )
  guard_resume "$CKPT_DIR/$name" "${args[@]}"
  [[ $DRY_RUN == 1 ]] || say "run $name: checkpoints in $CKPT_DIR/$name; after a crash, rerun with RUN_NAME=$name to resume"
  check_verl
  run "$PYTHON" -m verl.trainer.main_ppo --config-path "$CONFIG_DIR" --config-name flexrec_trainer "${args[@]}"
}

# steps_note OUT_DIR: how many optimiser steps the run will take (from prep_info.json's row count)
steps_note() {
  [[ $DRY_RUN == 1 ]] && return
  "$PYTHON" - "$1/prep_info.json" "$TRAIN_BATCH_SIZE" "$TOTAL_EPOCHS" >&2 <<'EOF' || true
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]["train"]
batch, epochs = int(sys.argv[2]), int(sys.argv[3])
print(f"[flexrec] {rows} train rows / {batch} prompts per step x {epochs} epochs = {rows // batch * epochs} steps")
EOF
}

# flexrec_main SETTING DATASET [hydra overrides...]: one of the paper's settings, end to end
flexrec_main() {
  local setting=${1:-} dataset=${2:-} out label train_file
  [[ -n $setting && -n $dataset ]] || die "usage: $(basename "$0") single_need|unseen_needs|multi_need|sparse_critic kuairec|ml-1m|esci [hydra overrides...]"
  shift 2
  check_settings
  local need=$NEED
  [[ -z $need ]] && { [[ $dataset == esci ]] && need=product_search || need=maximize_interest; }
  case $setting in
    single_need)
      out="$DATA_DIR/$dataset/$need"; label="flexrec_${dataset}_${need}"
      prepare_data "$dataset" "$out" --needs "$need" ;;
    unseen_needs)
      [[ $dataset == esci ]] && die "ESCI has a single need (product_search)"
      out="$DATA_DIR/$dataset/unseen_needs"; label="flexrec_${dataset}_unseen_needs"
      prepare_data "$dataset" "$out" --train-needs maximize_interest --test-needs explore_new_topics,trend_promotion ;;
    multi_need)
      [[ $dataset == esci ]] && die "ESCI has a single need (product_search)"
      out="$DATA_DIR/$dataset/all_needs"; label="flexrec_${dataset}_all_needs"
      prepare_data "$dataset" "$out" --needs all ;;
    sparse_critic)
      [[ $dataset == esci ]] && die "ESCI has no interaction matrix for the critic"
      out="$DATA_DIR/$dataset/sparse_$need"; label="flexrec_${dataset}_sparse"
      prepare_data "$dataset" "$out" --needs "$need" --sparse-frac 0.1 ;;
    *) die "unknown setting '$setting' (single_need, unseen_needs, multi_need, sparse_critic)" ;;
  esac
  train_file="$out/train.parquet"
  if [[ $setting == sparse_critic ]]; then
    local critic="$out/critic.pt"
    if [[ $DRY_RUN == 1 || ! -f $critic ]]; then
      run "$PYTHON" -m verl_flexrec.critic train --data "$out/interactions.parquet" "$out/train.parquet" --out "$critic"
      run "$PYTHON" -m verl_flexrec.critic evaluate --critic "$critic" --data "$out/train.parquet" --out-dir "$out/critic_report"
    fi
    run "$PYTHON" -m verl_flexrec.critic fill --critic "$critic" --data "$out/train.parquet" --out "$out/train_filled.parquet"
    train_file="$out/train_filled.parquet"
  fi
  prompt_length "$out"
  steps_note "$out"
  train "$label" "$train_file" "$out/test.parquet" "$PROMPT_LEN" "$@"
}
