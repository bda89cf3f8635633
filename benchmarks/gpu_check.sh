#!/usr/bin/env bash
# GPU check: benchmarks/trl_compare.py side by side (lapo / TRL / floor) on one CUDA GPU.
#
# Model: a random-init Qwen2 of Qwen2.5-1.5B's shape (hidden 1536, 28 layers, 12 heads, 2 KV
# heads, intermediate 8960, tied embeddings, vocabulary 151,936 rows; the project's character
# tokenizer fills the first rows), in 4-bit NF4 with bf16 compute, LoRA r 8 on all linear
# layers; G = 8, 1,024 max new tokens, B = 2 problems per step. Per system and workload it
# prints s/step, generation and training tokens/s, peak GPU memory
# (torch.cuda.max_memory_allocated) and the lapo/TRL speed ratio. Written for the device
# tool's machine: one H100, Python 3.12 with torch, transformers, peft and lightning, no network.
#
# 1. On the CPU machine (it reaches PyPI), before the device call, fetch the wheels the GPU
#    image lacks into benchmarks/wheels/ (git-ignored), at the versions .venv runs:
#        bash benchmarks/gpu_check.sh fetch
#    bitsandbytes (43 MB), trl, datasets, dill, multiprocess, math-verify, latex2sympy2_extended,
#    antlr4-python3-runtime, peft: about 46 MB. With the ~13 MB work tree that is ~59 MB of the
#    64 MiB the device tool carries, so transformers is not carried: the image's own (5.17 when
#    last read) runs, though pyproject asks for >= 5.24.
# 2. One device call (the script keeps itself under ~7.5 minutes; BUDGET_S below):
#        run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels"], timeout_s=560)
#    Everything it prints is also in $OUT/gpu_check.log, the rows in $OUT/trl_compare.json
#    (runs/gpu_check/ when OUT is unset). Runs that do not fit the budget are listed, not run.
# Knobs (environment): B, T, STEPS, WARMUP, WORKLOADS, SYSTEMS, BUDGET_S (seconds for the
# benchmark, model build included), PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=benchmarks/wheels
PACKAGES="bitsandbytes trl datasets dill multiprocess math-verify latex2sympy2_extended antlr4-python3-runtime peft"

fetch() {  # on the CPU machine: the device has Python 3.12 on x86-64 and no network
    local py=${PYTHON:-.venv/bin/python}
    local pins
    pins=$("$py" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' $PACKAGES) || return 1
    mkdir -p "$WHEELS"
    "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$WHEELS" $pins || return 1
    du -ch "$WHEELS"/*.whl | tail -1
}

main() {
    local py=${PYTHON:-python3} site=/tmp/gpu_check_site
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    echo "== install ($WHEELS)"
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        # --no-deps: only what is carried; --target: the image's own packages stay as they are.
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$WHEELS"/*.whl || echo "!! wheel install failed; going on with what is there"
    else
        echo "!! no wheels: run 'bash benchmarks/gpu_check.sh fetch' here first and carry $WHEELS"
    fi
    # The project itself from the work tree: no build step (nothing to fetch), nothing written.
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"

    echo "== device"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    nproc
    "$py" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "peft", "lightning", "accelerate", "bitsandbytes", "trl", "datasets",
             "math_verify", "lapo_lightning"):
    try:
        module = importlib.import_module(name)
        print(f"{name:15s} {getattr(module, '__version__', '?'):12s} {module.__file__}")
    except Exception as error:  # report and go on: the benchmark says what it cannot run
        print(f"{name:15s} MISSING ({type(error).__name__}: {error})")
import torch
print("torch.version.cuda", torch.version.cuda, "| device:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
EOF

    echo "== benchmark"
    "$py" benchmarks/trl_compare.py --device cuda --preset qwen2.5-1.5b --load-in-4bit --dtype bfloat16 \
        --problems "${B:-2}" --group 8 --max-new-tokens "${T:-1024}" --micro 8 \
        --steps "${STEPS:-1}" --warmup "${WARMUP:-1}" --workloads "${WORKLOADS:-varied,equal}" \
        --systems "${SYSTEMS:-lapo,trl,floor}" --budget-s "${BUDGET_S:-390}" --out "$OUT/trl_compare.json"
    local status=$?
    echo "== gpu_check: exit $status after ${SECONDS} s"
    return $status
}

if [[ "${1:-}" == fetch ]]; then
    fetch
    exit
fi
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
