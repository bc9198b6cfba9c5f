#!/usr/bin/env bash
# The same as: bash recipes/flexrec/run_qwen2_5_3b_vllm.sh sparse_critic DATASET [hydra overrides...]
# (the setting's name kept for older commands; every variable of that script applies).
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen2_5_3b_vllm.sh" sparse_critic "$@"
