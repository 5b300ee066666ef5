#!/usr/bin/env bash
# The main job on the embedded default: set up libtorch, build in release, build (first run only) and load the
# bundled tiny Russian GPT-2, print its summary and a short generation. Extra arguments go to `ruprompts demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-release.sh
cargo run --release --quiet -- demo "$@"
