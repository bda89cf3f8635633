"""Compare ``lapo_lightning.safety.cost``'s start-up estimate with the peak memory of a real run.

Runs ``lapo fit`` on configs/debug/grpo.yaml in this process, with a random-init Qwen2 whose
vocabulary is large enough for the logits to matter (the character tokenizer sits in its
first rows, as in workloads.py's presets, so almost no sampled token is EOS and every
completion runs to the cap: the estimate's worst case). It prints the estimate and the
measured peak: growth of the process's peak resident memory (``ru_maxrss``) over its
resident memory just before fitting. On CPU that measures every tensor (weights, optimizer,
activations) plus allocator slack, and the attention kernels differ from CUDA's, so read
the ratio as a rough check of the estimate, not as a GPU number.

    python benchmarks/memory_estimate.py                       # fp32
    python benchmarks/memory_estimate.py --checkpointing       # gradient checkpointing on
    python benchmarks/memory_estimate.py --hidden 384 --vocab 48000 --max-new-tokens 192
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_model(out: Path, hidden: int, layers: int, vocab: int) -> Path:
    from lapo_lightning.models.tiny import save_tiny

    return save_tiny(out, "qwen2", hidden, layers, vocab_size=vocab)


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (the second has AdamW state)")
    args = parser.parse_args(argv)

    from lapo_lightning.safety import cost
    from lapo_lightning.safety.cost_advice import estimate_table
    from lapo_lightning.cli.main import build_cli

    work = Path(tempfile.mkdtemp(prefix="lapo_mem_"))
    model_dir = build_model(work / "model", args.hidden, args.layers, args.vocab)
    config = (ROOT / "configs" / "debug" / "grpo.yaml").read_text()
    (work / "grpo.yaml").write_text(re.sub(r"\bruns\b", str(work / "runs"), config))
    cli = build_cli([
        "--config", str(work / "grpo.yaml"), "--model.policy.model", str(model_dir),
        "--model.policy.lora.r", "8", "--model.policy.gradient_checkpointing", str(args.checkpointing).lower(),
        "--model.grpo.group_size", str(args.group), "--model.grpo.micro_batch_size", str(args.micro),
        "--model.generation.max_new_tokens", str(args.max_new_tokens), "--data.problems_per_step", str(args.problems),
        "--trainer.max_steps", str(args.steps), "--trainer.limit_val_batches", "0",
        "--trainer.enable_checkpointing", "false", "--trainer.logger", "false", "--trainer.callbacks", "[]",
    ], run=False)
    seen: dict = {}
    from lapo_lightning.safety import memory_check

    original = memory_check.check_before_loading

    def recording(module, datamodule):
        seen["estimate"] = original(module, datamodule)
        seen["rss_before"] = rss_bytes()  # after imports, data and tokenizer; before any weights
        seen["peak_before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return seen["estimate"]

    import lapo_lightning.module as module_file

    module_file.check_before_loading = recording
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = seen["estimate"]
    growth = peak - seen["rss_before"]
    result = {"estimate_gb": est.peak_bytes / cost.GB, "measured_growth_gb": growth / cost.GB,
              "estimate/measured": est.peak_bytes / growth,
              "peak_before_fit_above_rss": (seen["peak_before"] - seen["rss_before"]) / cost.GB}
    print(estimate_table(est))
    print(f"measured: peak RSS growth during fit {growth / cost.GB:.3f} GB "
          f"(estimate {est.peak_bytes / cost.GB:.3f} GB, ratio {result['estimate/measured']:.2f}); "
          f"peak before fit was {result['peak_before_fit_above_rss']:.3f} GB above the RSS it starts from")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
