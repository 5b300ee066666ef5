#!/usr/bin/env bash
# The side-by-side benchmark in one command: libtorch (scripts/setup.sh), the Python reference in an ignored venv
# (scripts/python-ref.sh: .cache/bench-venv, pinned in bench/requirements.txt), our side in release, then bench/compare.py,
# which writes bench/results.md. Arguments go to compare.py: --shape small|tiny, --runs N, --threads N, ...
# It is a benchmark, not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python=$(bash scripts/python-ref.sh)
cargo build --release --quiet --example bench_vs_python
exec "$python" bench/compare.py "$@"
