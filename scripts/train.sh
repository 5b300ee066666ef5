#!/usr/bin/env bash
# The main job: set up libtorch, build in release, train a soft prompt for DaNetQA on the bundled tiny Russian
# model (built on first use) with examples/configs/danetqa.yaml, saving it in runs/danetqa-<time>/, then print
# the zero-shot vs tuned report on the validation split (also written to runs/danetqa-<time>/eval/).
# Arguments replace the defaults: `bash scripts/train.sh examples/configs/terra.yaml training.max_steps=50`
# (add --overwrite to replace an earlier run in the config's output_dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-release.sh
if [ "$#" -eq 0 ]; then
    set -- examples/configs/danetqa.yaml "output_dir=runs/danetqa-$(date +%Y%m%d-%H%M%S)"
fi
cargo run --release --quiet -- train "$@"
config=$1
shift
# The overrides go to eval too; --overwrite is train's alone.
eval_args=()
for arg in "$@"; do
    [ "$arg" = --overwrite ] || eval_args+=("$arg")
done
cargo run --release --quiet -- eval --config "$config" "${eval_args[@]}"
