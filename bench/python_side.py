"""The Python side of the side-by-side benchmark: ruPrompts 0.1.4 + transformers 4.57 (PEFT 0.21,
lm-evaluation-harness 0.4.13), as their users run them.

`make-model` writes a model with random weights (transformers' initialisation, seed 0) in Hugging Face format;
`convert-gguf` writes transformers' conversion of a GGUF file (what a Python user loads it as); `run WORKLOAD` times
one workload on the work `examples/bench_vs_python.rs prepare` wrote (the same token ids and initial prompt weights
ours uses) and prints one JSON line, like our side. The prompt is a ruPrompts `Prompt` patched into the model
(`PromptEmbedding` replaces the input embedding), or PEFT's prompt tuning for train-peft; scoring is the naive
per-candidate forward (context + answer, sum of the answer's log-probs), or lm-evaluation-harness's HF backend
(`HFLM`, batch 8) for lmeval-<task>; generation is `model.generate`, greedy.
"""
import argparse
import json
import os
import shutil
import sys
import time


def since_start():
    t0 = os.environ.get("BENCH_T0")
    return time.time() - float(t0) if t0 else float("nan")


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make_model(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    with open(args.config) as f:
        fields = json.load(f)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    tmp = args.out + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in os.listdir(args.tokenizer):
        if name != "config.json":
            shutil.copy(os.path.join(args.tokenizer, name), tmp)
    os.replace(tmp, args.out)


def convert_gguf(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tmp = args.out + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, args.out)


def load(spec, kind):
    """The model (eval mode: no dropout, as ours) with a ruPrompts prompt of `kind` holding the shared initial
    weights, and the prompt's token id."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ruprompts import LSTMPromptProvider, Prompt, PromptFormat, TensorPromptProvider

    model = AutoModelForCausalLM.from_pretrained(spec["python_model"], torch_dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if kind is None:
        return model, None, None
    tokenizer = AutoTokenizer.from_pretrained(spec["python_model"])
    provider = TensorPromptProvider() if kind == "tensor" else LSTMPromptProvider()
    prompt = Prompt(PromptFormat("<P*%d>{text}" % spec["prompt_length"]), provider)
    prompt.patch(model, tokenizer)
    state = load_file(os.path.join(spec["work"], "init_%s.safetensors" % kind))
    provider.load_state_dict(state)
    provider.train()
    prompt_id = tokenizer.convert_tokens_to_ids(prompt.format.prompt_token)
    return model, provider, prompt_id


def load_prefix(spec):
    """The model under PEFT prefix tuning (20 virtual tokens, no projection) holding the shared initial keys and
    values; PEFT's own forward prepends them in every layer."""
    from peft import PrefixTuningConfig, get_peft_model
    from safetensors.torch import load_file

    model, _, _ = load(spec, None)
    model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec["prompt_length"]))
    model.eval()
    state = load_file(os.path.join(spec["work"], "init_prefix.safetensors"))
    model.prompt_encoder["default"].load_state_dict(state)
    return model


def load_prompt_tuning(spec):
    """The model under PEFT prompt tuning (20 virtual tokens before the input) holding the tensor prompt's initial
    embeddings."""
    from peft import PromptTuningConfig, get_peft_model
    from safetensors.torch import load_file

    model, _, _ = load(spec, None)
    model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec["prompt_length"]))
    model.eval()
    (weights,) = load_file(os.path.join(spec["work"], "init_tensor.safetensors")).values()
    model.prompt_encoder["default"].embedding.weight.data.copy_(weights)
    return model


def with_prompt(spec, rows, prompt_id):
    import torch

    return torch.tensor([[prompt_id] * spec["prompt_length"] + r for r in rows])


def train(spec, kind, steps):
    import torch

    if kind in ("prefix", "peft"):
        # The virtual tokens are no part of PEFT's input: the text rows alone.
        model = load_prefix(spec) if kind == "prefix" else load_prompt_tuning(spec)
        ids, params = torch.tensor(spec["train"]["ids"]), [p for p in model.parameters() if p.requires_grad]
    else:
        model, provider, prompt_id = load(spec, kind)
        ids, params = with_prompt(spec, spec["train"]["ids"], prompt_id), provider.parameters()
    labels = torch.full_like(ids, -100)
    labels[:, -spec["train"]["labelled"]:] = ids[:, -spec["train"]["labelled"]:]
    opt = torch.optim.AdamW(params, lr=spec["train"]["lr"], weight_decay=0.0)
    losses, cold = [], 0.0
    for step in range(steps):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 0:
            cold, start = since_start(), time.perf_counter()
    return (steps - 1) / (time.perf_counter() - start), cold, {"losses": losses}


def score(spec, task):
    import torch

    model, _, _ = load(spec, None)
    requests = spec["score"][task]
    predictions, all_sums, cold = [], [], 0.0
    with torch.no_grad():
        for i, r in enumerate(requests):
            sums = []
            for answer in r["answers"]:
                ids = torch.tensor([r["context"] + answer])
                logits = model(input_ids=ids).logits[0, len(r["context"]) - 1 : -1]
                logp = torch.log_softmax(logits.float(), dim=-1)
                sums.append(logp.gather(1, torch.tensor(answer)[:, None]).sum().item())
            predictions.append(max(range(len(sums)), key=lambda k: sums[k]))
            all_sums.append(sums)
            if i == 0:
                cold, start = since_start(), time.perf_counter()
    return (len(requests) - 1) / (time.perf_counter() - start), cold, {"predictions": predictions, "sums": all_sums}


def score_lmeval(spec, task):
    """The same requests through lm-evaluation-harness's HF backend: `HFLM._loglikelihood_tokens`, the step its
    `loglikelihood` takes after tokenizing, given our token ids (so both sides score identical tokens). It batches
    (batch 8) the context + answer sequences, longest first; the first item is scored alone and not timed."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=spec["python_model"], device="cpu", batch_size=8, dtype="float32")
    requests = spec["score"][task]

    def sums(items):
        flat = [(("", ""), r["context"], answer) for r in items for answer in r["answers"]]
        scores = iter(logprob for logprob, _ in lm._loglikelihood_tokens(flat, disable_tqdm=True))
        return [[next(scores) for _ in r["answers"]] for r in items]

    all_sums = sums(requests[:1])
    cold, start = since_start(), time.perf_counter()
    all_sums += sums(requests[1:])
    rate = (len(requests) - 1) / (time.perf_counter() - start)
    predictions = [max(range(len(s)), key=lambda k: s[k]) for s in all_sums]
    return rate, cold, {"predictions": predictions, "sums": all_sums}


def generation(spec, batch, num_beams=1):
    import torch

    model, _, prompt_id = load(spec, "tensor")
    # Every row runs its full length: no stop token.
    model.generation_config.eos_token_id = None
    new = spec["generate"]["new_tokens"]
    inputs = with_prompt(spec, spec["generate"]["inputs"], prompt_id)
    chunks = [inputs[i : i + 1] for i in range(4)] if batch == 1 else [inputs] * 3
    generated, cold = [], 0.0
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            out = model.generate(
                input_ids=chunk,
                attention_mask=torch.ones_like(chunk),
                max_new_tokens=new,
                do_sample=False,
                num_beams=num_beams,
                pad_token_id=0,
            )
            generated.extend(out[:, chunk.shape[1] :].tolist())
            if i == 0:
                cold, start = since_start(), time.perf_counter()
    tokens = (len(chunks) - 1) * chunks[0].shape[0] * new
    rows = 4 if batch == 1 else len(inputs)
    return tokens / (time.perf_counter() - start), cold, {"generated": generated[:rows]}


def run(args):
    import torch

    torch.set_num_threads(args.threads)
    with open(os.path.join(args.work, "spec.json")) as f:
        spec = json.load(f)
    spec["work"] = args.work
    spec.setdefault("python_model", spec["model"])
    workloads = {
        "train-tensor": (lambda: train(spec, "tensor", args.steps), "steps/s"),
        "train-lstm": (lambda: train(spec, "lstm", args.steps), "steps/s"),
        "train-prefix": (lambda: train(spec, "prefix", args.steps), "steps/s"),
        "train-peft": (lambda: train(spec, "peft", args.steps), "steps/s"),
        **{f"score-{name}": ((lambda name=name: score(spec, name)), "items/s") for name in spec["score"]},
        **{f"lmeval-{name}": ((lambda name=name: score_lmeval(spec, name)), "items/s") for name in spec["score"]},
        "generate-1": (lambda: generation(spec, 1), "tokens/s"),
        "generate-8": (lambda: generation(spec, 8), "tokens/s"),
        "beam-1": (lambda: generation(spec, 1, num_beams=4), "tokens/s"),
        "beam-8": (lambda: generation(spec, 8, num_beams=4), "tokens/s"),
    }
    # `<workload>-int8` (or -int4) is ours with quantized weights: the Python stack runs the same work in f32.
    work, unit = workloads[args.workload.removesuffix("-int8").removesuffix("-int4")]
    rate, cold, check = work()
    print(json.dumps({
        "side": "python", "workload": args.workload, "throughput": rate, "unit": unit, "cold_start_s": cold,
        "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads(), "check": check,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--config", required=True)
    m.add_argument("--tokenizer", required=True)
    m.add_argument("--out", required=True)
    c = sub.add_parser("convert-gguf")
    c.add_argument("--gguf", required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("workload")
    r.add_argument("--work", required=True)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    {"make-model": make_model, "convert-gguf": convert_gguf, "run": run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
