#!/usr/bin/env bash
# Data-parallel prompt tuning, one process against `mpirun -np 2`, on the ruGPT-3-small-shaped random model
# (made by bench/compare.py's model_dir) with DaNetQA's bundled rows: `ruprompts train` end to end, updates/s of
# the training loop as it reports them. Writes bench/results-mpi.md. Needs Open MPI (see docs/src/scaling.md).
# It is a benchmark, not a test: CI does not run it.
#   bash bench/mpi.sh [STEPS]     (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
bash scripts/setup.sh >/dev/null
python=$(bash scripts/python-ref.sh)
model=$("$python" -c "import sys; sys.path.insert(0, 'bench'); import compare; print(compare.model_dir('small'))" | tail -1)
cargo build --release --quiet --features mpi
bin=target/release/ruprompts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
# The training split alone (no validation split beside it): the timed loop is the updates, not evaluations.
mkdir -p "$work/data"
cp assets/rsg/DaNetQA/train.jsonl.gz "$work/data/"
settings=(model.path="$model" dataset.dir="$work/data" training.max_steps="$steps" training.eval_every=null
    training.save_every=null training.log_every=1 training.batch_size=8 preprocessing.max_tokens=128
    scheduler.warmup_steps=0)

# `label`: how it ran; the rest: the command. Prints the table row from the run's summary line.
run() {
    local label=$1 ranks=$2 threads=$3
    shift 3
    local out="$work/$label"
    local line
    line=$(OMP_NUM_THREADS=$threads "$@" train examples/configs/danetqa.yaml "${settings[@]}" output_dir="$out" \
        --threads "$threads" | grep "updates of")
    # "6 updates of 6 (9,216 trainable parameters) in 40.1 s, 0.15 updates/s"
    local rate params loss
    rate=$(sed -E 's/.* ([0-9.]+) updates\/s.*/\1/' <<<"$line")
    params=$(sed -E 's/.*\(([0-9,]+) trainable.*/\1/' <<<"$line" | tr -d ,)
    loss=$(tail -1 "$out/metrics.jsonl" | sed -E 's/.*"loss":([0-9.e+-]+).*/\1/')
    echo "| $label | $ranks | $threads | $rate | $loss | $params |"
}

{
    echo "# Data-parallel training: 1 process against mpirun -np 2"
    echo
    echo "Model: ruGPT-3-small shape, random weights. examples/configs/danetqa.yaml (<P*8>…<P*4>, tensor prompt), batch 8"
    echo "× up to 128 tokens, $steps updates. $(nproc) cores. \`bash bench/mpi.sh $steps\`."
    echo
    echo "| run | ranks | threads a rank | updates/s | last loss | prompt parameters (all-reduced a step) |"
    echo "|---|---:|---:|---:|---:|---:|"
    run "1 process, 2 threads" 1 2 "$bin"
    run "1 process, 1 thread" 1 1 "$bin"
    run "mpirun -np 2" 2 1 mpirun --oversubscribe -np 2 "$bin"
} | tee bench/results-mpi.md
