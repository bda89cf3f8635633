"""Peak CUDA memory of one full training micro-step at the paper's shape, beside the estimate.

One micro-batch as ``lapo fit`` trains it: ``GRPOModule.completion_logprobs`` (decoder, then
the output head in chunks), the GRPO loss against a reference, backward, and an AdamW step
(whose state is allocated here), on a random-init Qwen2 of DeepSeek-R1-Distill-Qwen-1.5B's
shape (28 layers, hidden 1,536, vocabulary 151,936) loaded through ``load_policy`` in 4-bit
NF4 with bf16 compute, LoRA r 64 on all linear layers, gradient checkpointing. Inputs:
``--rows`` rows of a ``--prompt``-token prompt and a ``--tokens``-token completion, every one
at the cap (the estimate's worst case). Then a no-grad pass of the same rows (the reference
pass's shape). ``--device-memory`` caps the process as on a card that size, so a peak the
estimate under-counts shows up as "out of memory".

Printed: peak allocated and reserved per pass, the start-up estimate's weights + LoRA state
+ training term for the same settings, and the seconds each pass took.

    python benchmarks/cuda_train_pass.py --device-memory 12            # on a CUDA GPU
    python benchmarks/cuda_train_pass.py --device cpu --smoke          # the flow, tiny, on the CPU
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

MB = 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--rows", type=int, default=4, help="rollouts per micro-batch")
    parser.add_argument("--prompt", type=int, default=150, help="prompt tokens")
    parser.add_argument("--tokens", type=int, default=4096, help="completion tokens (the cap)")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--device-memory", type=float, metavar="GB", help="cap the CUDA process at GB (1e9 bytes)")
    parser.add_argument("--no-tiled-mlp", action="store_true",
                        help="compute each MLP whole (model.grpo.mlp_chunk_tokens null), as before tiling")
    parser.add_argument("--smoke", action="store_true", help="a tiny model (checks the flow, not the memory)")
    args = parser.parse_args(argv)

    import torch

    from lapo_lightning import GenerationConfig, GRPOConfig, GRPOModule
    from lapo_lightning.models import shape as model_shape
    from lapo_lightning.safety import cost_advice
    from lapo_lightning.algo import grpo_loss
    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
    from lapo_lightning.reference import AdapterDisabled
    from lapo_lightning.tiled_mlp import tile_mlps
    from lapo_lightning.types import ProblemBatch, RolloutBatch

    cuda = args.device == "cuda"
    if args.device_memory and not cuda:
        parser.error("--device-memory caps a CUDA device; on the CPU it has nothing to cap")
    if cuda and args.device_memory:
        torch.cuda.set_per_process_memory_fraction(args.device_memory * 1e9
                                                   / torch.cuda.get_device_properties(0).total_memory)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        from workloads import build_preset_models

        preset = "qwen2-tiny" if args.smoke else "qwen2.5-1.5b"
        dtype = "bfloat16" if cuda else "float32"
        folder = build_preset_models(Path(tmp), preset, args.tokens, args.device, dtype, ["equal"])["equal"]
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        policy = PolicyConfig(model=folder, dtype=dtype, load_in_4bit=cuda, bnb_compute_dtype=dtype,
                              lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r), gradient_checkpointing=True)
        grpo = GRPOConfig(group_size=2, micro_batch_size=args.rows, kl_coef=1e-4, shared_prefix=False,
                          token_aggregation="token_mean", mlp_chunk_tokens=None if args.no_tiled_mlp else 2048)
        generation = GenerationConfig(max_new_tokens=args.tokens)
        estimate = cost_advice.RunSettings(model_shape.read_shape(folder), policy, grpo, generation, args.rows // 2,
                                    args.prompt).estimate()
        model, _ = load_policy(policy)
        model.to(device).train()
        module = GRPOModule(policy=policy, grpo=grpo, generation=generation, reference=AdapterDisabled())
        module.policy = model
        tile_mlps(model, grpo.mlp_chunk_tokens)  # as GRPOModule.configure_model leaves it (null: --no-tiled-mlp)
        loaded = torch.cuda.memory_allocated() if cuda else 0
        rows, t, vocab = args.rows, args.tokens, model.config.vocab_size
        gen = torch.Generator().manual_seed(0)
        ones = torch.ones(rows, args.prompt + t, dtype=torch.bool, device=device)
        batch = RolloutBatch(problems=ProblemBatch(["p"], ["p"], ["1"]), group_index=torch.zeros(rows, dtype=torch.long),
                             prompt_ids=torch.randint(vocab, (rows, args.prompt), generator=gen).to(device),
                             prompt_mask=ones[:, :args.prompt],
                             completion_ids=torch.randint(vocab, (rows, t), generator=gen).to(device),
                             completion_mask=ones[:, args.prompt:], texts=[""] * rows,
                             truncated=torch.ones(rows, dtype=torch.bool))
        ref = (-5 * torch.rand(rows, t, generator=gen) - 9).to(device)
        advantages = torch.randn(rows, generator=gen).to(device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

        def sync():
            if cuda:
                torch.cuda.synchronize()

        def step():
            lp = module.completion_logprobs(batch, torch.arange(rows))
            mask = batch.completion_mask
            loss = grpo_loss(lp, None, ref, advantages, mask, kl_coef=1e-4, total_tokens=float(mask.sum()),
                             total_sequences=float(rows), max_tokens=t).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # grads stay allocated, as between Lightning steps

        def no_grad():
            with torch.no_grad():
                module.completion_logprobs(batch, torch.arange(rows))

        result = {"rows": rows, "prompt": args.prompt, "tokens": t, "cap GB": args.device_memory,
                  "loaded MB": loaded / MB,
                  "estimate MB": (estimate.weight_bytes + estimate.lora_state_bytes + estimate.training_bytes) / MB}
        for name, fn in (("train", step), ("train again", step), ("no-grad", no_grad)):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            try:
                fn()
                sync()
                result[f"{name} s"] = time.perf_counter() - start
            except torch.cuda.OutOfMemoryError as err:
                result[f"{name} s"] = f"out of memory: {str(err).splitlines()[0][:160]}"
            if cuda:
                result[f"{name} peak MB"] = torch.cuda.max_memory_allocated() / MB
                result[f"{name} reserved MB"] = torch.cuda.max_memory_reserved() / MB
    print(f"one training micro-step: {'tiny' if args.smoke else 'R1-Distill-1.5B shape (random, tied head)'}"
          f"{' nf4 + bf16' if cuda else ' fp32'} on {torch.cuda.get_device_name(0) if cuda else 'cpu'}, "
          f"LoRA r {args.lora_r}, checkpointing, MLPs {'whole' if args.no_tiled_mlp else 'tiled'}, "
          f"{rows} rows x ({args.prompt} + {t}) tokens")
    for key, value in result.items():
        print(f"  {key:22s} {value:.1f}" if isinstance(value, float) else f"  {key:22s} {value}")
    return result


if __name__ == "__main__":
    main()
