"""Where rollout decoding spends its time: milliseconds per decode step, side by side, for the
weight formats a run can load (bf16 or 4-bit NF4) with the LoRA adapter on or switched off.

Rollouts are most of a GRPO step's time, and each decode step of ``generate`` is one forward
of every row through every layer. This loads a random-init Qwen2 of ``--preset``'s shape
(default: DeepSeek-R1-Distill-Qwen-1.5B's, 28 layers, hidden 1,536, vocabulary 151,936)
through ``load_policy``, the path ``lapo fit`` uses, and samples ``--rows`` rows of a
``--prompt``-token prompt for exactly ``--tokens`` new tokens (EOS never ends a row early, so
every variant runs the same number of steps). Prefill is timed apart (one new token) and
subtracted.

    python benchmarks/decode_speed.py                                  # on a CUDA GPU
    python benchmarks/decode_speed.py --device cpu --preset qwen2-tiny --variants bf16 --tokens 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = ("bf16", "bf16-no-lora", "nf4", "nf4-no-lora")


def timed_generate(model, prompt, new_tokens: int, sync) -> float:
    """Seconds one sampled ``generate`` of exactly ``new_tokens`` takes."""
    import torch

    with torch.no_grad():
        sync()
        start = time.perf_counter()
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        sync()
    return time.perf_counter() - start


def measure(variant: str, folder: str, args, sync) -> dict:
    """One row of the table: load ``variant``, time prefill and the decode steps."""
    import contextlib

    import torch

    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy

    cuda = args.device == "cuda"
    four_bit = variant.startswith("nf4")
    dtype = "bfloat16" if cuda else "float32"
    policy = PolicyConfig(model=folder, dtype=dtype, load_in_4bit=four_bit, bnb_compute_dtype=dtype,
                          lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r))
    model, _ = load_policy(policy)
    model.to(args.device).eval()
    off = model.disable_adapter() if variant.endswith("no-lora") else contextlib.nullcontext()
    torch.manual_seed(0)
    prompt = torch.randint(1, 60, (args.rows, args.prompt), device=args.device)
    with off:
        timed_generate(model, prompt, 2, sync)  # warm-up: kernels, allocator
        prefill = timed_generate(model, prompt, 1, sync)
        total = timed_generate(model, prompt, args.tokens, sync)
    step_ms = 1000 * (total - prefill) / max(1, args.tokens - 1)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return {"variant": variant, "rows": args.rows, "prefill s": round(prefill, 3), "decode ms/step": round(step_ms, 1),
            "tokens/s": round(args.rows * 1000 / step_ms)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--preset", default="qwen2.5-1.5b", help="workloads.PRESETS shape of the random Qwen2")
    parser.add_argument("--rows", type=int, default=48, help="rows decoded together (the 12 GB recipe's rows per call)")
    parser.add_argument("--prompt", type=int, default=150)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per row")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    import torch

    from workloads import build_preset_models

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dtype = "bfloat16" if args.device == "cuda" else "float32"
        folder = build_preset_models(Path(tmp), args.preset, args.tokens, args.device, dtype, ["equal"])["equal"]
        name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
        print(f"decode: {args.preset} (random Qwen2) on {name}, {args.rows} rows x ({args.prompt} prompt + "
              f"{args.tokens} sampled) tokens, LoRA r {args.lora_r} on all linear layers", flush=True)
        print("| variant | rows | prefill s | decode ms/step | tokens/s |\n|---|---|---|---|---|", flush=True)
        for variant in variants:
            row = measure(variant, folder, args, sync)
            print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
