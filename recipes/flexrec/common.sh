# Shared by recipes/flexrec/run_*.sh: settings, data preparation and the verl launch.
# Source it; do not run it. Every setting is an environment variable:
#
#   DATA_DIR   prepared parquet go to $DATA_DIR/<dataset>/<setting>   (default: <repo>/data)
#   RAW_DIR    official raw files (downloaded here unless DOWNLOAD=0)  (default: $DATA_DIR/raw)
#   DOWNLOAD   1 = let data preparation fetch the official release (default: 1)
#   MODEL_PATH HF id or local directory of the policy  (default: Qwen/Qwen2.5-3B-Instruct)
#   N_GPUS     GPUs per node (default: 4, the paper's 4 x A100); NNODES (default: 1)
#   BASELINE   none (FlexRec) | rec_r1 | rank_grpo | no_uncertainty   (default: none)
#   CKPT_DIR   checkpoints go to $CKPT_DIR/<experiment>  (default: <repo>/checkpoints)
#   PYTHON     interpreter with verl-flexrec installed (default: python)
#   DRY_RUN    1 = print every command instead of running it (tests/test_recipes.py uses this)
#
# Extra arguments to a run_*.sh script are appended to the verl command as hydra overrides,
# e.g. `trainer.total_epochs=2 data.train_batch_size=64`.

set -euo pipefail

FLEXREC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA_DIR=${DATA_DIR:-$FLEXREC_ROOT/data}
RAW_DIR=${RAW_DIR:-$DATA_DIR/raw}
DOWNLOAD=${DOWNLOAD:-1}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}
N_GPUS=${N_GPUS:-4}
NNODES=${NNODES:-1}
BASELINE=${BASELINE:-none}
CKPT_DIR=${CKPT_DIR:-$FLEXREC_ROOT/checkpoints}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}

die() { echo "[flexrec] error: $*" >&2; exit 2; }

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
    echo "[flexrec] $*" >&2
    "$@"
  fi
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
    echo "[flexrec] using the prepared data in $out" >&2
    return
  fi
  local download=()
  [[ $DOWNLOAD == 1 ]] && download=(--download)
  run "$PYTHON" -m verl_flexrec.data "$command" --raw-dir "$RAW_DIR" --out-dir "$out" "${download[@]}" "$@"
}

# train EXPERIMENT TRAIN_FILES VAL_FILES [hydra overrides...]: verl's PPO trainer with FlexRec
train() {
  local name=$1 train_files=$2 val_files=$3
  shift 3
  [[ $BASELINE == none ]] || name="${name}_${BASELINE}"
  run "$PYTHON" -m verl.trainer.main_ppo \
    --config-path "$CONFIG_DIR" --config-name flexrec_trainer \
    "baseline=$BASELINE" \
    "data.train_files=$train_files" \
    "data.val_files=$val_files" \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    "trainer.n_gpus_per_node=$N_GPUS" \
    "trainer.nnodes=$NNODES" \
    "trainer.experiment_name=$name" \
    "trainer.default_local_dir=$CKPT_DIR/$name" \
    "$@"
}
