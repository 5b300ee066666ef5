#!/usr/bin/env bash
# The GPU check: parity tests on CUDA and the hot paths timed at the ruGPT-3-large shape in f32 and bf16, written
# into one results file. For a machine with an NVIDIA GPU whose python3 has a CUDA build of torch 2.11 (the lent
# machines have torch 2.11.0+cu130, no Rust toolchain and no network).
#
#   bash scripts/gpu-check.sh --prepare      here, with no GPU: builds the release test binaries, the GPU benchmark
#                                            and the CLI against .libtorch, copies them, stripped, into
#                                            .gpu-check/bin (ignored by git; ~100 MB) and packs that into
#                                            .gpu-check/bin.tar.gz (~40 MB, within the 64 MiB the device tool
#                                            carries: `carry: [".gpu-check/bin.tar.gz"]`)
#   bash scripts/gpu-check.sh [RESULTS]      there: runs them against that machine's own torch libraries and
#                                            writes RESULTS (default $OUT/gpu-check.md, else gpu-check.md); about
#                                            5 minutes on an H200
#
# GPU_CHECK_DEVICE=cpu makes the same run a dry run on a machine without a GPU (CPU, ruGPT-3-small shape, one timed
# step, f32 only; about 3 minutes on 2 cores), with python3 pointing at any torch 2.11 (e.g.
# PATH=$PWD/.cache/bench-venv/bin:$PATH after scripts/python-ref.sh).
#
# A binary linked here records libtorch_cpu.so, not libtorch_cuda.so, so nothing would load torch's CUDA backend:
# the script preloads libtorch_cuda.so from the machine's torch. Where the machine has cargo and no prepared
# binaries, it builds them there against that torch instead (LIBTORCH_USE_PYTORCH=1).
set -euo pipefail
device=${GPU_CHECK_DEVICE:-cuda}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=.gpu-check/bin
# The parity tests that compare with transformers' (and PEFT's) reference outputs; their tolerances scale for CUDA
# (tests/common). device_map splits a model between the CPU and the GPU. Each is a test binary (tests/<binary>/main.rs)
# and the modules of it to run.
tests=("parity gpt2_parity:: prefix_parity:: llama_parity::" "eval score::" "generate generate::" "model device_map::")
binaries() { for t in "${tests[@]}"; do echo "${t%% *}"; done | sort -u; }

prepare() {
    [ -n "${LIBTORCH_USE_PYTORCH:-}" ] || bash scripts/setup.sh
    mkdir -p "$bin"
    echo "gpu-check: building release test binaries, bench_gpu and ruprompts (several minutes the first time)"
    local list
    list=$(cargo test --release --no-run --message-format=json $(printf -- '--test %s ' $(binaries)) 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
    while read -r name exe; do cp "$exe" "$bin/$name"; done <<<"$list"
    cargo build --release --quiet --example bench_gpu --example bench_serve --bin ruprompts
    cp target/release/examples/bench_gpu target/release/examples/bench_serve target/release/ruprompts "$bin/"
    strip "$bin"/*
    tar czf .gpu-check/bin.tar.gz -C .gpu-check bin
    du -sh "$bin" .gpu-check/bin.tar.gz
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit 0
fi

results=${1:-${OUT:+$OUT/gpu-check.md}}
results=${results:-gpu-check.md}
log() { echo "$*" | tee -a "$results"; }
: >"$results"
start=$(date +%s)

# 1. What the machine has (a minute at most).
log "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
log ""
gpu=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true)
log "- GPU: ${gpu:-none found}"
torch_dir=$(timeout 60 python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
torch_info=$(timeout 60 python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())')
log "- python3 torch: $torch_info ($torch_dir)"
log "- cargo there: $(command -v cargo || echo none)"

# 2. Binaries: carried (packed), or built here when a toolchain is present.
if [ ! -x "$bin/bench_gpu" ] && [ -f .gpu-check/bin.tar.gz ]; then
    tar xzf .gpu-check/bin.tar.gz -C .gpu-check
fi
if [ ! -x "$bin/bench_gpu" ]; then
    if command -v cargo >/dev/null; then
        log "- no prepared binaries: building them here against the machine's torch"
        export LIBTORCH_USE_PYTORCH=1 LIBTORCH="$torch_dir"
        prepare >/dev/null
    else
        log "- no prepared binaries in $bin and no cargo: run 'bash scripts/gpu-check.sh --prepare' where cargo is, then carry .gpu-check/bin.tar.gz"
        exit 1
    fi
fi

# 3. The machine's torch libraries and CUDA backend for our binaries.
nvidia_libs=$(find "$(dirname "$torch_dir")/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':' || true)
export LD_LIBRARY_PATH="$torch_dir/lib:${nvidia_libs}${LD_LIBRARY_PATH:-}"
export LD_PRELOAD="$torch_dir/lib/libtorch_cuda.so${LD_PRELOAD:+:$LD_PRELOAD}"
export RUPROMPTS_REPO="$root" OMP_NUM_THREADS=4
placed=$("$bin/ruprompts" info tests/fixtures/tiny-gpt2-ru --device "$device" 2>&1 | grep -E "parameters|error" || true)
log "- ruprompts info --device $device: $placed"
log ""

# 4. Parity with transformers on CUDA, f32 (tolerances: 10x the CPU's, tests/common::tol).
log "## Parity tests on $device (RUPROMPTS_TEST_DEVICE=$device)"
log ""
failed=0
# The ignored tests among them need CUDA (a CPU + cuda:0 split): a dry run leaves them out.
ignored=()
[ "$device" = cpu ] || ignored=(--include-ignored)
for t in "${tests[@]}"; do
    read -r name modules <<<"$t"
    # shellcheck disable=SC2086 # the modules are separate filters
    if out=$(RUPROMPTS_TEST_DEVICE=$device timeout 300 "$bin/$name" $modules --test-threads 1 "${ignored[@]}" 2>&1); then status=passed; else
        status=FAILED
        failed=1
    fi
    log "- $t: $status: $(echo "$out" | grep -E '^test result' | tail -1)"
    [ "$status" = passed ] || echo "$out" | grep -E "panicked|FAILED|assert" | head -20 | sed 's/^/    /' | tee -a "$results"
done
log ""

# 5. Speed at the ruGPT-3-large shape, f32 and bf16.
# bf16 on a CPU without bf16 units takes minutes a step: the dry run times f32 only.
if [ "$device" = cuda ]; then shape=(--shape large --steps 5); else shape=(--shape small --steps 1 --dtype f32); fi
log "## Hot paths (${shape[*]})"
log ""
timeout 420 "$bin/bench_gpu" --device "$device" "${shape[@]}" 2>&1 | tee -a "$results" || failed=1
log ""

# 6. Serving: the same requests one at a time and from 8 and 32 clients (ruGPT-3-small shape).
log "## Serving (bench_serve)"
log ""
timeout 240 "$bin/bench_serve" --device "$device" --requests 32 2>&1 | tee -a "$results" || failed=1
log ""
log "(took $(( $(date +%s) - start )) s)"
exit $failed
