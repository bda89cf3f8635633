#!/usr/bin/env bash
# GPU check: everything a CUDA GPU (H100/H200, ~15 minutes) should tell us, in one run
# of under 8 minutes, in four parts, the one that answers the most first:
#   (a) memory   benchmarks/cuda_train_pass.py: one training micro-step (4 rows at the cap,
#                forward, loss, backward, AdamW) at DeepSeek-R1-Distill-Qwen-1.5B's shape in
#                4-bit NF4 with bf16 compute, LoRA r 64, checkpointing, as the recipes train:
#                cap 4,096 under a 12 GB process cap, cap 8,192 under 24 GB; peak allocated
#                and reserved beside the start-up estimate (~40 s each on an H200);
#   (b) stages   benchmarks/stage_steps.py: one LAPO stage-1 and one stage-2 step through
#                GRPOModule on a random-init model of Qwen2.5-1.5B's shape (hidden 1536, 28
#                layers, vocabulary 151,936), same quantization and LoRA, G = 8, under the
#                DEVICE_GB (12) GB cap with micro-batch and rows per generate call `auto`,
#                STAGE_B (6) problems = 48 rollouts (the rows per call the 12 GB stage-1 recipe
#                gets), cap STAGE_T (1,024): s/step, generation tokens/s, peak GPU memory beside
#                the estimate, or "out of memory under the cap". Decoding 48 rows in 4-bit with
#                LoRA made 46 tokens/s on an H200 (one generate call at cap 4,096 took 403 s),
#                so the paper's cap does not fit this script's time;
#   (c) tests    the suite's CUDA-marked tests (tests/test_cuda.py: 4-bit NF4 + LoRA forward
#                and backward against the dequantized fp32 model, decoding, one GRPO step);
#   (d) compare  benchmarks/trl_compare.py side by side (lapo / TRL / floor) on the same
#                shape, the realistic workload first (the paper's stage-2 prompt on MATH-500
#                rows through SmolLM2's BPE tokenizer, ~167 tokens; completions uniform up
#                to 1,024), then varied lengths, as far as the time left allows.
# Written for a GPU machine without network access that has Python 3.12 with torch,
# transformers (5.17 on the image it was written for), peft and lightning.
#
# 1. On a machine that reaches PyPI, before copying the work tree to the GPU machine:
#        bash benchmarks/gpu_check.sh fetch
#    puts into benchmarks/wheels/ (git-ignored) the wheels the image lacks, at the versions
#    .venv runs (bitsandbytes 43 MB, trl, datasets, dill, multiprocess, math-verify,
#    latex2sympy2_extended, antlr4-python3-runtime, peft, pytest, pluggy, iniconfig, pygments:
#    46 MB before pytest and pygments, ~2 MB, joined: not re-measured)
#    and SmolLM2's tokenizer files (bpe_tokenizer/, ~3.5 MB). With the ~13 MB work tree that
#    fits a 64 MiB upload to such a machine; transformers does not, so the image's own runs.
# 2. On the GPU machine, with benchmarks/wheels copied along (under ~9.5 minutes):
#        bash benchmarks/gpu_check.sh
#    Everything printed is also in $OUT/gpu_check.log, the rows in $OUT/*.json
#    (runs/gpu_check/ when OUT is unset). Parts that do not fit the time are listed, not run.
# Dry run, here on the CPU, same script at test size (tests/test_benchmark_smoke.py runs it):
#        DRY=1 bash benchmarks/gpu_check.sh        (or: bash benchmarks/gpu_check.sh --dry)
# Knobs (environment): PARTS (which parts, in which order; default "a b c d"), DEADLINE_S (whole script, default 450), MEMORY_RUNS ("cap:GB ..."), B, T,
# STAGE_B, STAGE_T, DEVICE_GB,
# RCAP (realistic cap), STEPS, WARMUP (stage 1's unmeasured steps), WORKLOADS, SYSTEMS, PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=benchmarks/wheels
PACKAGES="bitsandbytes trl datasets dill multiprocess math-verify latex2sympy2_extended antlr4-python3-runtime peft
pytest pluggy iniconfig pygments"

fetch() {  # on the CPU machine: the device has Python 3.12 on x86-64 and no network
    local py=${PYTHON:-.venv/bin/python}
    local pins
    pins=$("$py" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' $PACKAGES) || return 1
    mkdir -p "$WHEELS"
    "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$WHEELS" $pins || return 1
    # The realistic workload's tokenizer (the device cannot convert the GGUF wheel itself).
    "$py" - "$WHEELS/bpe_tokenizer" <<'EOF' || return 1
import sys
from transformers import AutoTokenizer
from lapo_lightning.models.source import resolve
AutoTokenizer.from_pretrained(resolve("gguf:smollm2-135m-instruct")).save_pretrained(sys.argv[1])
EOF
    du -sh "$WHEELS"
}

part_a() {
    echo "== (a) memory: one training micro-step at the recipes' shapes (${SECONDS} s so far)"
    local cap gb
    for cap_gb in ${MEMORY_RUNS:-4096:12 8192:24}; do
        cap=${cap_gb%%:*} gb=${cap_gb##*:}
        if (( DRY )); then
            timeout "$(left)" "$py" benchmarks/cuda_train_pass.py --device cpu --smoke --rows 2 --prompt 8 --tokens 16 \
                --lora-r "$lora"
        else
            timeout "$(( $(left) / 4 ))" "$py" benchmarks/cuda_train_pass.py --tokens "$cap" --device-memory "$gb" \
                --lora-r "$lora"
        fi
        (( $? == 0 )) || status=1
    done
}

part_b() {
    echo "== (b) stages: one stage-1 and one stage-2 step${DEVICE_GB:+, capped at $DEVICE_GB GB} (${SECONDS} s so far)"
    timeout "$(( $(left) * 3 / 4 ))" "$py" benchmarks/stage_steps.py --device "$device" --preset "$preset" "${quant[@]}" --dtype "$dtype" \
        --problems "$STAGE_B" --group "$group" --max-new-tokens "$STAGE_T" --micro auto --rollouts-per-call auto \
        ${DEVICE_GB:+--device-memory "$DEVICE_GB"} --lora-r "$lora" \
        --steps "$STEPS" --warmup "$WARMUP" --budget-s "$(( $(left) * 3 / 4 - 10 ))" --out "$OUT/stage_steps.json"
    rc=$?
    echo "stages: exit $rc"
    (( rc == 0 )) || status=1
}

part_c() {
    echo "== (c) tests: pytest -m cuda (LAPO_TEST_DEVICE=$test_device)"
    local files
    files=$(grep -rl --include='*.py' "mark.cuda" tests | sort | tr '\n' ' ')
    LAPO_TEST_DEVICE=$test_device timeout "$(( $(left) < tests_s ? $(left) : tests_s ))" \
        "$py" -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors -W ignore $files
    rc=$?
    echo "tests: exit $rc"
    (( rc == 0 )) || status=1
}

part_d() {
    echo "== (d) compare: lapo / TRL / floor (${SECONDS} s so far, $(left) s left)"
    if (( $(left) > 30 )); then
        "$py" benchmarks/trl_compare.py --device "$device" --preset "$preset" "${quant[@]}" --dtype "$dtype" \
            --problems "$B" --group "$group" --max-new-tokens "$T" --realistic-cap "$RCAP" --micro 8 \
            --bpe-tokenizer "$bpe" --steps "$STEPS" --warmup "${CWARMUP:-0}" \
            --workloads "${WORKLOADS:-$workloads}" --systems "${SYSTEMS:-lapo,trl,floor}" \
            --budget-s "$(( $(left) - 10 ))" --out "$OUT/trl_compare.json"
        rc=$?
        echo "compare: exit $rc"
        (( rc == 0 )) || status=1
    else
        echo "compare: not run, $(left) s left"
        status=1
    fi
}

left() { echo $(( DEADLINE - SECONDS )); }

main() {
    local py=${PYTHON:-python3} site=/tmp/gpu_check_site status=0
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    local device=cuda preset=qwen2.5-1.5b quant=(--load-in-4bit) dtype=bfloat16 group=8 lora=64
    local T=${T:-1024} STAGE_T=${STAGE_T:-1024} RCAP=${RCAP:-1024} B=${B:-2} STEPS=${STEPS:-1} WARMUP=${WARMUP:-0} test_device=cuda
    local STAGE_B=${STAGE_B:-6} DEVICE_GB=${DEVICE_GB:-12}
    local bpe=$WHEELS/bpe_tokenizer tests_s=150 workloads=realistic,varied
    if (( DRY )); then  # the same parts on the CPU at test size: checks the script, not the GPU
        device=cpu preset=qwen2-tiny dtype=float32 group=4 lora=8 T=8 STAGE_T=8 RCAP=8 B=2 STEPS=1 WARMUP=0
        STAGE_B=2 DEVICE_GB=  # no cap on the CPU
        test_device=cpu tests_s=120 workloads=varied  # realistic needs the BPE tokenizer: tested on its own
        "$py" -c 'import bitsandbytes' 2>/dev/null || quant=()
        echo "== DRY RUN on the CPU (test sizes; no number here is a GPU number)"
    else
        echo "== install ($WHEELS)"
        if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
            # --no-deps: only what is carried; --target: the image's own packages stay as they are.
            "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
                "$WHEELS"/*.whl || echo "!! wheel install failed; going on with what is there"
        else
            echo "!! no wheels: run 'bash benchmarks/gpu_check.sh fetch' here first and carry $WHEELS"
        fi
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # The project itself from the work tree: no build step, nothing written.
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

    echo "== device"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
    nproc
    "$py" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "peft", "lightning", "accelerate", "bitsandbytes", "trl", "datasets",
             "math_verify", "pytest", "lapo_lightning"):
    try:
        module = importlib.import_module(name)
        print(f"{name:15s} {getattr(module, '__version__', '?'):12s} {module.__file__}")
    except Exception as error:  # report and go on: each part says what it cannot run
        print(f"{name:15s} MISSING ({type(error).__name__}: {error})")
import torch
print("torch.version.cuda", torch.version.cuda, "| device:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
EOF

    local rc part
    for part in ${PARTS:-a b c d}; do "part_$part"; done
    echo "== gpu_check: exit $status after ${SECONDS} s"
    return $status
}

DRY=${DRY:-0}
case "${1:-}" in
    fetch) fetch; exit ;;
    --dry) DRY=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [fetch|--dry]" >&2; exit 2 ;;
esac
DEADLINE=${DEADLINE_S:-450}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
