#!/usr/bin/env bash
# As run_qwen2_5_3b_vllm.sh with SGLang rollouts (pip install "verl[sglang]"); same settings and variables.
#
#   bash recipes/flexrec/run_qwen2_5_3b_sglang.sh SETTING DATASET [hydra overrides...]
set -euo pipefail
export INFER_BACKEND=${INFER_BACKEND:-sglang}
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen2_5_3b_vllm.sh" "$@"
