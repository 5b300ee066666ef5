#!/usr/bin/env bash
# The whole test suite: set up libtorch, then unit, integration and doc tests. Everything they read is in the
# repository (tests/fixtures, assets); nothing beside the clone is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One OpenMP thread per libtorch user: on 2 cores, parallel tests with 2-thread pools spin-wait on each other.
export OMP_NUM_THREADS=1
# Hub traffic never leaves the machine: tests that use the Hub start their own server and say so; anything else
# finds a closed port and an empty cache.
export HF_ENDPOINT=http://127.0.0.1:9 HF_HOME="${TMPDIR:-/tmp}/ruprompts-test-hf-home"
unset HF_TOKEN HF_TOKEN_PATH HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HUB_OFFLINE
cargo test "$@"
