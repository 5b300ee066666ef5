#!/usr/bin/env bash
# Builds the release binary that scripts/train.sh and scripts/demo.sh run, without the Hugging Face Hub client (the
# `hub` feature: hf-hub's tree is about 40% of a cold build, ~5 minutes on 2 cores, and neither job talks to the
# Hub). `cargo build --release` builds the same binary with the client, for `push`, `pull` and Hub ids. The first
# build shows cargo's progress (about 8 minutes on 2 cores); later builds are quiet and take seconds. Prints nothing
# else; the binary is ${CARGO_TARGET_DIR:-target}/release/ruprompts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "${CARGO_TARGET_DIR:-target}/release/ruprompts" ]; then
    cargo build --release --no-default-features --features cli --quiet
else
    echo "build: compiling ruprompts in release for the first time (about 8 minutes on 2 cores; later runs start at once)" >&2
    cargo build --release --no-default-features --features cli
fi
