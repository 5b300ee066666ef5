#!/usr/bin/env bash
# Builds the release binary. The first build shows cargo's progress (about 9 minutes on 2 cores, more than half
# of it the Hub client); later builds are quiet and take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "${CARGO_TARGET_DIR:-target}/release/ruprompts" ]; then
    cargo build --release --quiet
else
    echo "build: compiling ruprompts in release for the first time (about 9 minutes on 2 cores; later runs start at once)"
    cargo build --release
fi
