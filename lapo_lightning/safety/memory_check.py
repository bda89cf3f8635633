"""``lapo fit``'s start-up memory check, before any weights load: print the estimate, turn
``auto`` sizes into numbers, refuse what cannot fit.

Flow: ``GRPOModule.setup`` (after the data module is set up, before ``configure_model``
loads weights) calls :func:`check_before_loading`. It reads the model's ``config.json``
(:func:`lapo_lightning.models.shape.read_shape`, no weights), measures the longest rendered prompt
with the tokenizer, resolves ``auto`` sizes (:mod:`lapo_lightning.safety.auto_sizes`) and prints
:meth:`~lapo_lightning.safety.cost.CostEstimate.format` on rank zero; a config whose estimated
peak exceeds the device's total memory (a CUDA GPU, or system RAM on CPU) is refused with a
``ValueError`` naming the keys to change. ``LAPO_SKIP_MEMORY_CHECK=1`` prints without
refusing (for when you know better than the estimate). ``lapo check`` runs the same
estimate without a device (``lapo_lightning/cli/check.py``).
"""

from __future__ import annotations

import os

import torch

from lapo_lightning.safety.auto_sizes import has_auto, resolve_auto
from lapo_lightning.safety.cost import GB, LARGE_LORA_SHARE, CostEstimate, adapter_settings
from lapo_lightning.safety.cost_advice import RunSettings, estimate_table, longest_prompt_tokens, what_lowers_it
from lapo_lightning.models.shape import UnsupportedModel, read_shape

SKIP_ENV = "LAPO_SKIP_MEMORY_CHECK"
NEAR = 0.9  # warn above this share of the device: on an H200 PyTorch reserved up to 8% above the estimate


def device_total_memory(device: torch.device) -> int | None:
    """Total bytes of ``device``: a CUDA GPU's memory, or physical RAM on CPU; None if unknown.

    A CUDA process capped with ``torch.cuda.set_per_process_memory_fraction`` (a shared card)
    gets its share: the allocator refuses anything beyond it.
    """
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        share = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.8
        return int(total * share(device)) if share is not None else total
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not a POSIX system
            return None
    return None


def check_fits(run: RunSettings, device: torch.device, total: int | None) -> None:
    """Raise ``ValueError`` when the estimated peak exceeds the device's total memory."""
    est = run.estimate()
    if total is None or est.peak_bytes <= total:
        return
    phase = "training" if est.training_bytes >= est.generation_bytes else "generation"
    raise ValueError(
        f"this config needs about {est.peak_bytes / GB:.1f} GB on {device}, which has {total / GB:.1f} GB "
        f"(estimate printed above; {phase} is the larger phase). Each of these lowers the estimate: "
        f"{'; '.join(what_lowers_it(run))}. The estimate assumes every completion runs to the cap; "
        f"to start anyway set {SKIP_ENV}=1."
    )


def lora_advice(est: CostEstimate, lora_r: int) -> str | None:
    """A warning when the LoRA adapter is a large share of the base (paper r 64 on a small model)."""
    if est.lora_share <= LARGE_LORA_SHARE:
        return None
    return (f"model.policy.lora.r {lora_r} trains {count_millions(est.lora_params)} parameters, {est.lora_share:.0%} of "
            f"{est.model}: the paper's r 64 is sized for 1.5B+ models; r 8-16 keeps adapters and checkpoints small "
            f"on a model this size")


def count_millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def check_before_loading(module, datamodule) -> CostEstimate | None:
    """``GRPOModule.setup``'s start-up cost check: print the estimate, refuse what cannot fit.

    Reads only config.json and the tokenizer; returns None (after printing why) for an
    architecture it cannot estimate.
    """
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    from lapo_lightning.policy import load_tokenizer

    policy = module.policy_config
    try:
        shape = read_shape(policy.model, policy.trust_remote_code)
    except UnsupportedModel as err:
        if has_auto(module.grpo, module.generation):
            raise ValueError(f"model.grpo.micro_batch_size / model.generation.max_rollouts_per_call: 'auto' needs a "
                             f"memory estimate, and there is none for {policy.model} ({err}); set numbers") from None
        rank_zero_info(f"no memory estimate for {policy.model}: {err}")
        return None
    problems = [p.problem for p in getattr(datamodule, "train_problems", None) or []]
    prompt_tokens = longest_prompt_tokens(load_tokenizer(policy), module.prompt, problems,
                                          module.generation.max_new_tokens)
    device = module.trainer.strategy.root_device
    total = device_total_memory(device)
    run, chosen = resolve_auto(RunSettings(shape, policy, module.grpo, module.generation, datamodule.problems_per_step,
                                           prompt_tokens), total)
    module.grpo, module.generation = run.grpo, run.generation  # `auto` is a number from here on
    est = run.estimate()
    available = f"{total / GB:.1f} GB in total" if total is not None else "total memory unknown"
    rank_zero_info(estimate_table(est) + f"\n  {'device':<14} {device}: {available}"
                   + "".join(f"\n  {'auto':<14} {line}" for line in chosen))
    if advice := lora_advice(est, adapter_settings(policy)[0]):
        rank_zero_warn(advice)
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return est
    check_fits(run, device, total)
    if total is not None and est.peak_bytes > NEAR * total:
        rank_zero_warn(f"the memory estimate ({est.peak_bytes / GB:.1f} GB) is above {NEAR:.0%} of {device}'s "
                       f"{total / GB:.1f} GB, and PyTorch's allocator reserved up to 8% more than estimated on an "
                       f"H200: this run may not fit ({'; '.join(what_lowers_it(run)[:3])})")
    return est
