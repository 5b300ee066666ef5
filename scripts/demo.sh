#!/usr/bin/env bash
# The bundled tiny Russian GPT-2 end to end, with nothing beside the repository: set up libtorch, build in release,
# build (first run only) and load the tiny model, print its summary and a short generation, then train a DaNetQA
# prompt on it (examples/configs/danetqa.yaml) and print the zero-shot vs tuned report. A model this small learns
# nothing useful: it exercises the Russian SuperGLUE path. Extra arguments go to `ruprompts demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

bash scripts/build-release.sh
ruprompts="${CARGO_TARGET_DIR:-target}/release/ruprompts"
"$ruprompts" demo "$@"
out="runs/danetqa-$(date +%Y%m%d-%H%M%S)"
"$ruprompts" train examples/configs/danetqa.yaml "output_dir=$out"
"$ruprompts" eval --config examples/configs/danetqa.yaml "output_dir=$out"
