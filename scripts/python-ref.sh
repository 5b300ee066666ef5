#!/usr/bin/env bash
# The Python reference stack in the ignored venv `.cache/bench-venv`, made once: torch 2.11.0 (our libtorch's
# version), transformers 4.57.6, lm-eval 0.4.13 (with its HF extra: datasets, accelerate, peft) and the rest pinned
# in bench/requirements.txt, ruprompts 0.1.4 with --no-deps (its
# metadata pins torch<2; its code runs on torch 2.x). ~5 GB: torch from PyPI imports only with its nvidia-* wheels,
# even on CPU. The benchmarks (bench/run.sh) and the fixture generator (tests/fixtures/scripts/regenerate.sh) use
# it. Reinstalled only when bench/requirements.txt changes. Prints the venv's python on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.cache/bench-venv"
stamp="$venv/.requirements"
if ! cmp -s "$root/bench/requirements.txt" "$stamp" 2>/dev/null; then
    echo "python-ref: installing the Python reference into $venv (once, ~5 GB)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --find-links "${RUPROMPTS_CACHE:-$root/.cache}/wheels" \
        -r "$root/bench/requirements.txt" >&2
    "$venv/bin/pip" install --quiet --no-deps ruprompts==0.1.4 >&2
    cp "$root/bench/requirements.txt" "$stamp"
fi
echo "$venv/bin/python"
