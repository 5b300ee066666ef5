"""Runs our side and the Python side (ruPrompts + transformers; PEFT for prefix tuning) of every workload on identical work, alternating
(ours, Python, ours, Python, ...), and writes the medians, the ratios and the agreement checks to bench/results.md.
Standard library only. Normally started by bench/run.sh, which installs and builds what this needs.

Workloads (batch, lengths and prompt as in examples/bench_vs_python.rs):
  train-tensor, train-lstm   prompt-tuning steps: 8 rows x 128 tokens, <P*20>, AdamW; steps/s
  train-prefix               the same with a 20-token deep prompt (keys and values in every layer; PEFT prefix
                             tuning on the Python side)
  train-peft                 train-tensor against PEFT's prompt tuning (20 virtual tokens) instead of ruPrompts
  score-danetqa, score-parus multiple-choice scoring of N items; items/s (Python: naive per-candidate forward)
  lmeval-<task>              the same requests scored by lm-evaluation-harness's HF backend (HFLM, batch 8)
  score-terra-5shot          the same with five fixed demonstrations before each TERRa item (shared prefix)
  score-muserc               MuSeRC answer options (items of one question share paragraph and question)
  generate-1, generate-8     greedy, 64 new tokens after <P*20> + 24 tokens; tokens/s
  beam-1, beam-8             the same with 4 beams (the best returned); new tokens of the inputs per second
  <scoring or generation>-int8  ours with int8 weights (--quantize int8) against Python's f32; -int4 likewise
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PYTHON = os.path.join(ROOT, ".cache", "bench-venv", "bin", "python")
OURS = os.path.join(ROOT, "target", "release", "examples", "bench_vs_python")
WORKLOADS = ["train-tensor", "train-lstm", "train-prefix", "score-danetqa", "score-parus", "score-terra-5shot", "score-muserc",
             "generate-1", "generate-8", "beam-1", "beam-8"]
SHAPES = {
    "small": "ruGPT-3-small shape (12 layers, d 768, 12 heads, vocab 50264), random weights",
    "tiny": "the tiny fixture model (2 layers, d 64, vocab 2000)",
    "qwen2-0.5b": "Qwen2.5-0.5B shape (Qwen2ForCausalLM: 24 layers, d 896, 14 query and 2 key/value heads, SwiGLU 4864, "
                  "vocab 151936, tied embeddings; bench/qwen2-0.5b.json), random weights, with the Qwen2-kind fixture "
                  "tokenizer (tests/fixtures/tokenizers/qwen2, 1000 tokens)",
    "smollm2": "SmolLM2-135M-Instruct, its real weights (Llama: 30 layers, d 576, 9 query and 3 key/value heads, "
               "vocab 49152): ours reads the Q4_1 GGUF file scripts/setup.sh fetches, dequantized to f32 on load; "
               "Python loads transformers' conversion of the same file (from_pretrained(gguf_file=...), saved once "
               "to .cache/bench/smollm2-hf)",
}
# The real model: our side reads this file; Python loads transformers' conversion of it.
REAL_MODEL = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# Random-weight models: (folder under .cache/bench, config.json, tokenizer folder).
RANDOM = {
    "small": ("rugpt3small-random", os.path.join(FIXTURES, "rugpt3", "config.json"), os.path.join(FIXTURES, "rugpt3")),
    "qwen2-0.5b": ("qwen2-0.5b-random", os.path.join(ROOT, "bench", "qwen2-0.5b.json"),
                   os.path.join(FIXTURES, "tokenizers", "qwen2")),
}


def python_model(shape, model):
    """What the Python side loads: the model itself, or for the GGUF file transformers' conversion of it."""
    if shape != "smollm2":
        return model
    path = os.path.join(ROOT, ".cache", "bench", "smollm2-hf")
    if not os.path.isdir(path):
        print("converting the GGUF file with transformers into", path, flush=True)
        subprocess.run([PYTHON, os.path.join(ROOT, "bench", "python_side.py"), "convert-gguf", "--gguf", model,
                        "--out", path], check=True)
    return path


def model_dir(shape):
    if shape == "tiny":
        return os.path.join(FIXTURES, "tiny-gpt2-ru")
    if shape == "smollm2":
        if not os.path.isfile(REAL_MODEL):
            sys.exit(f"{REAL_MODEL} is missing: bash scripts/setup.sh fetches it")
        return REAL_MODEL
    name, config, tokenizer = RANDOM[shape]
    path = os.path.join(ROOT, ".cache", "bench", name)
    if not os.path.isdir(path):
        print(f"making the {shape}-shaped model with random weights in", path, flush=True)
        subprocess.run([PYTHON, os.path.join(ROOT, "bench", "python_side.py"), "make-model", "--config", config,
                        "--tokenizer", tokenizer, "--out", path], check=True)
    return path


def run_one(side, workload, args, work):
    if side == "ours":
        cmd = [OURS, "run", workload, "--work", work, "--threads", str(args.threads), "--steps", str(args.steps)]
    else:
        cmd = [PYTHON, os.path.join(ROOT, "bench", "python_side.py"), "run", workload, "--work", work,
               "--threads", str(args.threads), "--steps", str(args.steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    env["BENCH_T0"] = repr(time.time())
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{side} {workload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(workload, ours, python):
    """Whether both sides computed the same thing, in words."""
    a, b = ours["check"], python["check"]
    if workload.startswith("train"):
        diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"])]
        ok = diffs[0] <= 1e-4
        return ok, f"first-step loss {a['losses'][0]:.5f} vs {b['losses'][0]:.5f} (Δ {diffs[0]:.1e}); " \
                   f"max Δ over {len(diffs)} steps {max(diffs):.1e}"
    scoring = workload.startswith(("score", "lmeval"))
    key = "predictions" if scoring else "generated"
    same = sum(x == y for x, y in zip(a[key], b[key]))
    what = "items predicted alike" if key == "predictions" else "rows generated alike"
    if workload.endswith(("-int8", "-int4")):
        # Quantized weights against f32: agreement is reported, not required (quality is checked in
        # tests/model/quantize.rs).
        return True, f"{workload[-4:]} vs f32: {same}/{len(a[key])} {what}"
    ok, detail = same == len(a[key]) == len(b[key]), f"{same}/{len(a[key])} {what}"
    if scoring:
        # The numbers themselves: every candidate's log-prob sum (f32 on both sides, sums over up to a few
        # hundred tokens in different orders).
        diff = max(abs(x - y) for s, t in zip(a["sums"], b["sums"]) for x, y in zip(s, t))
        ok, detail = ok and diff <= 1e-3, f"{detail}; log-prob sums max Δ {diff:.1e}"
    return ok, detail


def read_bandwidth(threads):
    """GB/s of reading 1 GiB of f32 with `threads` threads (torch's sum, best of 5): the bound that decoding one row
    at a time meets, since it reads every weight once per token."""
    code = ("import time, torch; torch.set_num_threads(%d); x = torch.ones(2**28); x.sum(); best = 1e9\n"
            "for _ in range(5):\n t = time.perf_counter(); x.sum(); best = min(best, time.perf_counter() - t)\n"
            "print(2**30 / best / 1e9)" % threads)
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    versions = subprocess.run(
        [PYTHON, "-c", "import sys, torch, transformers, importlib.metadata as m; "
                       "print(sys.version.split()[0], torch.__version__, transformers.__version__, "
                       "*(m.version(p) for p in ('ruprompts', 'peft', 'lm_eval')))"],
        capture_output=True, text=True).stdout.split()
    py, torch, tf, rp, peft, lm_eval = (versions + ["?"] * 6)[:6]
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}.\n"
            f"Python {py}, torch {torch} (CPU), transformers {tf}, ruprompts {rp}, peft {peft}, lm_eval {lm_eval}; "
            f"ours: release build, libtorch 2.11.0 (CPU) through tch 0.24.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--runs", type=int, default=3, help="runs per side and workload (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (the first is not timed)")
    parser.add_argument("--items", type=int, default=16, help="items per scoring task (the first is not timed)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", help="the report (default bench/results.md; bench/results-SHAPE.md for other shapes)")
    args = parser.parse_args()
    name = "results.md" if args.shape == "small" else f"results-{args.shape}.md"
    args.out = args.out or os.path.join(ROOT, "bench", name)

    bandwidth = read_bandwidth(args.threads)
    model = model_dir(args.shape)
    work = os.path.join(ROOT, ".cache", "bench", f"work-{args.shape}")
    subprocess.run([OURS, "prepare", "--model", model, "--python-model", python_model(args.shape, model),
                    "--work", work, "--items", str(args.items)], check=True)
    rows = []
    for workload in args.workloads.split(","):
        results = {"ours": [], "python": []}
        for r in range(args.runs):
            for side in ("ours", "python"):
                res = run_one(side, workload, args, work)
                results[side].append(res)
                print(f"{workload:14} run {r + 1} {side:6} {res['throughput']:9.2f} {res['unit']:8} "
                      f"cold {res['cold_start_s']:5.1f} s  peak {res['peak_rss_mib']:6.0f} MiB", flush=True)
        med = {side: {k: statistics.median(x[k] for x in v) for k in ("throughput", "cold_start_s", "peak_rss_mib")}
               for side, v in results.items()}
        ok, detail = check(workload, results["ours"][0], results["python"][0])
        rows.append((workload, results["ours"][0]["unit"], med, ok, detail))

    lines = [
        "# Side-by-side: ruprompts (Rust) vs Python ruPrompts + transformers",
        "",
        f"Machine: {machine()}",
        "",
        f"Memory: reading 1 GiB of f32 with {args.threads} threads ran at {bandwidth:.1f} GB/s (torch's sum, best of 5, "
        f"before the runs): decoding one row reads every weight once per token, so that over the weights' bytes is "
        f"the bound for generate-1.",
        "",
        f"Model: {SHAPES[args.shape]}. {args.threads} threads on both sides (torch.set_num_threads / "
        f"tch::set_num_threads, OMP_NUM_THREADS). Median of {args.runs} runs per side, run alternately (ours, Python, "
        f"ours, Python, ...), each in a fresh process. Training: {args.steps} AdamW steps on 8 rows × 128 tokens with "
        f"a 20-token prompt (tensor or BiLSTM provider; train-prefix: 20 virtual tokens of keys and values in every layer, PEFT's PREFIX_TUNING on the Python side), the last 16 tokens labelled, model in eval mode (no dropout) "
        f"on both sides; the first step is not timed. Scoring: {args.items} items of each task (zero-shot; "
        f"TERRa 5-shot: the same five train items, first_n, before each; MuSeRC: answer options in file order), sum "
        f"of the answer's log-probs, Python scoring each candidate with its own forward as ruPrompts/transformers "
        f"users do, ours with the evaluator (shared context, shared prefixes run once, batched); the first item is "
        f"not timed. lmeval-<task>: the same requests through lm-evaluation-harness's HF backend (HFLM, batch 8, "
        f"the step after its tokenizer: `_loglikelihood_tokens` on our token ids), the log-prob sums compared. "
        f"train-peft: train-tensor's work with PEFT's PROMPT_TUNING (20 virtual tokens, our initial embeddings) on "
        f"the Python side. Generation: greedy, 64 new "
        f"tokens after the 20-token prompt and 24 text tokens, no stop token; batch 1 over 4 rows, batch 8 three "
        f"times; the first call is not timed; beam-1/beam-8 the same with 4 beams, the best sequence returned. Cold start: process start to the end of the first step / item / call "
        f"(imports, model loading and warm-up included). Peak RSS: VmHWM of the process.",
        "",
        "| workload | throughput, ours | throughput, Python | ours / Python | cold start, ours / Python (s) | "
        "peak RSS, ours / Python (MiB) | RSS ratio | same result |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workload, unit, med, ok, detail in rows:
        o, p = med["ours"], med["python"]
        lines.append(
            f"| {workload} | {o['throughput']:.2f} {unit} | {p['throughput']:.2f} {unit} | "
            f"**{o['throughput'] / p['throughput']:.2f}×** | {o['cold_start_s']:.1f} / {p['cold_start_s']:.1f} | "
            f"{o['peak_rss_mib']:.0f} / {p['peak_rss_mib']:.0f} | {o['peak_rss_mib'] / p['peak_rss_mib']:.2f} | "
            f"{'yes' if ok else '**no**'}: {detail} |")
    extra = "" if args.workloads == ",".join(WORKLOADS) else f" --workloads {args.workloads}"
    lines += ["", f"Reproduce: `bash bench/run.sh --shape {args.shape} --runs {args.runs} --threads {args.threads} "
                  f"--steps {args.steps}{extra}`.", ""]
    text = "\n".join(lines)
    tmp = args.out + ".part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    print("\n" + text)
    if not all(ok for *_, ok, _ in rows):
        sys.exit("the two sides disagree (see the last column)")


if __name__ == "__main__":
    main()
