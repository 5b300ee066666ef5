"""What int8 and int4 weights change in every Russian SuperGLUE metric of the tiny-model table: `ruprompts rsg` on
the demo model over tests/fixtures/rsg (prompts trained in f32), then each task's validation split scored again by
`ruprompts eval` with the same prompt and `--quantize none`, `int8` and `int4` (LiDiRus with the TERRa prompt, as
the benchmark scores it). Writes bench/results-rsg-quantized.md: each metric ×100 in f32 and its change under int8
and int4, zero-shot and tuned. A benchmark of quality, not a test: CI does not run it.

    python3 bench/rsg_quantized.py        (after `cargo build --release`; a few minutes on 2 cores)
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ruprompts")
DATA = os.path.join(ROOT, "tests", "fixtures", "rsg")
TASKS = ["LiDiRus", "RCB", "PARus", "MuSeRC", "TERRa", "RUSSE", "RWSD", "DaNetQA", "RuCoS"]
FORMS = ["none", "int8", "int4"]


def ruprompts(*args):
    out = subprocess.run([BIN, *args], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if out.returncode != 0:
        sys.exit(f"ruprompts {' '.join(args)} failed:\n{out.stderr}")


def metrics(report):
    with open(report) as f:
        rows = json.load(f)["tasks"][0]["metrics"]
    return {r["metric"]: (r["zero_shot"], r["tuned"]) for r in rows}


def answer_logprobs(out):
    """Every candidate's answer log-prob in an evaluation's caches, by (file, item, candidate)."""
    found = {}
    cache = os.path.join(out, "cache")
    for name in sorted(os.listdir(cache)):
        with open(os.path.join(cache, name)) as f:
            for line in f:
                record = json.loads(line)
                for c, candidate in enumerate(record["result"]["candidates"]):
                    found[(name, record["item"], c)] = candidate["answer_logprob"]
    return found


def main():
    work = tempfile.mkdtemp(prefix="rsg-quantized-")
    ruprompts("rsg", "--model", "demo", "--data", DATA, "--out", os.path.join(work, "rsg"))
    results, logprobs = {}, {}
    for task in TASKS:
        for form in FORMS:
            out = os.path.join(work, task, form)
            if task == "LiDiRus":
                data = os.path.join(DATA, "LiDiRus", "LiDiRus.jsonl")
                prompt = os.path.join(work, "rsg", "TERRa", "prompt")
                ruprompts("eval", "--task", "lidirus", "--data", data, "--prompt", prompt, "--quantize", form,
                          "--out", out)
            else:
                config = os.path.join(work, "rsg", task, "prompt", "config.yaml")
                ruprompts("eval", "--config", config, "--quantize", form, "--out", out)
            results[(task, form)] = metrics(os.path.join(out, "report.json"))
            logprobs[(task, form)] = answer_logprobs(out)
    lines = [
        "# Every Russian SuperGLUE metric under int8 and int4 weights (tiny-model table)",
        "",
        "`python3 bench/rsg_quantized.py`: `ruprompts rsg --model demo --data tests/fixtures/rsg` (prompts trained in "
        "f32), then each task's 16 validation items scored by `ruprompts eval` with the same prompt and "
        "`--quantize none | int8 | int4`. Values ×100; Δ is the quantized value minus f32's. With 16 items one item "
        "moves an accuracy by 6.25.",
        "",
        "| task | metric | zero-shot f32 | Δ int8 | Δ int4 | tuned f32 | Δ int8 | Δ int4 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    largest = {"int8": 0.0, "int4": 0.0}
    for task in TASKS:
        for metric, (zero, tuned) in results[(task, "none")].items():
            row = [task, metric, f"{100 * zero:.1f}"]
            cells = {}
            for i, base in enumerate([zero, tuned]):
                for form in ("int8", "int4"):
                    value = results[(task, form)][metric][i]
                    delta = 100 * (value - base)
                    largest[form] = max(largest[form], abs(delta))
                    cells[(i, form)] = f"{delta:+.1f}"
            row += [cells[(0, "int8")], cells[(0, "int4")], f"{100 * tuned:.1f}", cells[(1, "int8")],
                    cells[(1, "int4")]]
            lines.append("| " + " | ".join(row) + " |")
    moved = {}
    for form in ("int8", "int4"):
        deltas = [abs(logprobs[(t, form)][k] - v) for t in TASKS for k, v in logprobs[(t, "none")].items()]
        moved[form] = (max(deltas), len(deltas))
    lines += ["", f"Largest change of a metric: int8 {largest['int8']:.1f}, int4 {largest['int4']:.1f} (points ×100). "
              f"The scores under them did move: the largest change of a candidate's answer log-prob over the "
              f"{moved['int8'][1]} scored is {moved['int8'][0]:.3f} with int8 and {moved['int4'][0]:.3f} with int4.", ""]
    text = "\n".join(lines)
    with open(os.path.join(ROOT, "bench", "results-rsg-quantized.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
