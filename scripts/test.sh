#!/usr/bin/env bash
# The whole test suite: set up libtorch, then unit, integration and doc tests. Everything they read is in the
# repository (tests/fixtures, assets); nothing beside the clone is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
# One OpenMP thread per libtorch user: on 2 cores, parallel tests with 2-thread pools spin-wait on each other.
export OMP_NUM_THREADS=1
# Hub traffic never leaves the machine: tests that use the Hub start their own server and say so; anything else
# finds a closed port and an empty cache.
export HF_ENDPOINT=http://127.0.0.1:9 HF_HOME="${TMPDIR:-/tmp}/ruprompts-test-hf-home"
unset HF_TOKEN HF_TOKEN_PATH HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HUB_OFFLINE
# The MPI tests (tests/train/mpi.rs: `mpirun -np 2` training and evaluation) need Open MPI; CI installs it (.ci/run).
features=()
if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
    features=(--features mpi)
elif [ "${CI:-}" = true ]; then
    echo "test: Open MPI is missing (apt-get install libopenmpi-dev openmpi-bin libclang-dev)" >&2
    exit 1
else
    echo "test: Open MPI not found, so the MPI tests are left out (apt-get install libopenmpi-dev openmpi-bin libclang-dev)" >&2
fi
cargo test "${features[@]}" "$@"
# The tests of real clients (openai, lm-eval) are ignored by default, as they need the venv setup.sh installed;
# with no arguments (the whole suite) they run here.
if [ $# -eq 0 ]; then
    cargo test "${features[@]}" --test serve -- --ignored
fi
