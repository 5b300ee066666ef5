#!/usr/bin/env bash
# The side-by-side benchmark in one command: libtorch (scripts/setup.sh), the Python reference in an ignored venv
# (.cache/bench-venv: torch 2.11.0 = our libtorch's version, transformers 4.57.6, ruprompts 0.1.4 --no-deps; ~5 GB,
# torch from PyPI needs the nvidia-* wheels to import even on CPU), our side in release, then bench/compare.py,
# which writes bench/results.md. Arguments go to compare.py: --shape small|tiny, --runs N, --threads N, ...
# It is a benchmark, not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=.cache/bench-venv
stamp="$venv/.requirements"
if ! cmp -s bench/requirements.txt "$stamp" 2>/dev/null; then
    echo "bench: installing the Python reference into $venv (once; the torch wheel comes from .cache/wheels)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --find-links "${RUPROMPTS_CACHE:-.cache}/wheels" -r bench/requirements.txt
    # ruprompts 0.1.4 pins torch<2.0; its code runs on torch 2.x (its own tests pass), so no deps.
    "$venv/bin/pip" install --quiet --no-deps ruprompts==0.1.4
    cp bench/requirements.txt "$stamp"
fi
cargo build --release --quiet --example bench_vs_python
exec "$venv/bin/python" bench/compare.py "$@"
