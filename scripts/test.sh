#!/usr/bin/env bash
# The whole test suite: set up libtorch, then unit, integration and doc tests. Fixture tests read ../shared
# (or $RUPROMPTS_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One OpenMP thread per libtorch user: on 2 cores, parallel tests with 2-thread pools spin-wait on each other.
export OMP_NUM_THREADS=1
cargo test "$@"
