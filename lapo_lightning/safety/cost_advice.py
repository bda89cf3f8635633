"""What the memory estimate tells a person: its table, and which single setting lowers it.

Where it sits in the flow: ``lapo fit``'s start-up check (``lapo_lightning/safety/memory_check.py``),
the ``auto`` sizes (``lapo_lightning/safety/auto_sizes.py``) and ``lapo check`` build a
:class:`RunSettings`, estimate it with the formulas of ``lapo_lightning/safety/cost.py``, print
:func:`estimate_table` and, when it does not fit, :func:`what_lowers_it`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lapo_lightning.safety.cost import DEFAULT_PROMPT_TOKENS, GB, CostEstimate, estimate
from lapo_lightning.models.shape import ModelShape


def estimate_table(est: CostEstimate) -> str:
    """The estimate as a short table in GB (1e9 bytes): one decimal, three below 1 GB (debug models)."""
    def size(n: int) -> str:
        return f"{n / GB:.1f}" if n >= GB else f"{n / GB:.3f}"

    def gb(n: int) -> str:
        return f"{size(n):>7} GB"

    def count(n: int) -> str:
        return f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"

    ckpt = "on" if est.checkpointing else "off"
    rows = [
        ("model", f"{est.model}: {count(est.params)} parameters, {est.weights_label}", gb(est.weight_bytes)),
        ("LoRA", f"{count(est.lora_params)} parameters ({est.lora_label}, {est.lora_share:.1%} of the model) "
                 f"+ grads + AdamW",
         gb(est.lora_state_bytes)),
        ("rollouts/step", f"{est.problems_per_step} problems x G {est.group_size} = {est.rollouts}, "
                          f"generated {est.rows_per_call} at a time", ""),
        ("longest seq", f"{est.prompt_tokens} prompt + {est.max_new_tokens} new = {est.longest_sequence} tokens",
         ""),
        ("generation", f"KV cache {size(est.kv_cache_bytes)} GB + sampler {size(est.sampler_bytes)} GB",
         gb(est.generation_bytes)),
        ("training", f"micro-batch {est.micro_batch_size}, checkpointing {ckpt}: activations "
                     f"{size(est.activation_bytes)} GB + output head {size(est.logits_bytes)} GB",
         gb(est.training_bytes)),
        ("peak", "weights + LoRA state + max(generation, training)", gb(est.peak_bytes)),
    ]
    width = max(len(text) for _, text, _ in rows)
    lines = ["Memory estimate before loading weights (per process, worst case: every completion at the cap):"]
    lines += [f"  {name:<14} {text:<{width}} {amount}".rstrip() for name, text, amount in rows]
    return "\n".join(lines)


def longest_prompt_tokens(tokenizer, template, problems: list[str], budget: int | None, sample: int = 64) -> int:
    """Tokens of the longest rendered prompt (sequences are left-padded to the longest in a batch).

    Only the ``sample`` longest problems by characters are tokenized (cheap on 10k problems);
    ``budget`` adds the stage-2 budget sentence where the template places one (pass the
    generation cap: its digits are the most a budget writes).
    """
    if not problems:
        return DEFAULT_PROMPT_TOKENS
    longest = sorted(problems, key=len, reverse=True)[:sample]
    texts = [template.render(p, budget, tokenizer) for p in longest]
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class RunSettings:
    """Everything :func:`estimate` reads, so a change to one key can be estimated again."""

    shape: ModelShape
    policy: object  # PolicyConfig
    grpo: object  # GRPOConfig
    generation: object  # GenerationConfig
    problems_per_step: int
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS

    def estimate(self) -> CostEstimate:
        return estimate(self.shape, self.policy, self.grpo, self.generation, self.problems_per_step,
                        self.prompt_tokens)


def single_changes(run: RunSettings) -> list[tuple[str, RunSettings]]:
    """One-key changes that could lower memory: halve the micro-batch, the cap, the rows per
    generate() call or the problems per step; turn on checkpointing or 4-bit loading.
    (Halving keeps ``micro_batch_size`` a divisor of the rollout batch when it was one.)"""

    policy, grpo, gen = run.policy, run.grpo, run.generation
    rows = min(run.problems_per_step * grpo.group_size, gen.max_rollouts_per_call or 10**9)
    out = []
    if grpo.micro_batch_size > 1:
        m = grpo.micro_batch_size
        out.append((f"model.grpo.micro_batch_size {m} -> {m // 2}",
                    replace(run, grpo=replace(grpo, micro_batch_size=m // 2))))
    if gen.max_new_tokens > 1:
        cap = gen.max_new_tokens
        out.append((f"model.generation.max_new_tokens {cap} -> {cap // 2}",
                    replace(run, generation=replace(gen, max_new_tokens=cap // 2))))
    if not policy.gradient_checkpointing:
        out.append(("model.policy.gradient_checkpointing true",
                    replace(run, policy=replace(policy, gradient_checkpointing=True))))
    if not policy.load_in_4bit:
        try:
            out.append(("model.policy.load_in_4bit true", replace(run, policy=replace(policy, load_in_4bit=True))))
        except ValueError:  # bitsandbytes is not installed: not a change to suggest
            pass
    if rows > 1:
        out.append((f"model.generation.max_rollouts_per_call {rows // 2}",
                    replace(run, generation=replace(gen, max_rollouts_per_call=rows // 2))))
    if run.problems_per_step > 1:
        b = run.problems_per_step
        out.append((f"data.problems_per_step {b} -> {b // 2}", replace(run, problems_per_step=b // 2)))
    return out


def what_lowers_it(run: RunSettings) -> list[str]:
    """The single-key changes that lower the estimated peak, largest saving first, e.g.
    ``["model.grpo.micro_batch_size 4 -> 2 (-18.3 GB)", ...]``. Estimated, not assumed: 4-bit
    loading upcasts an fp16 model's stream to fp32, so it can raise the peak of an fp16 run."""
    peak = run.estimate().peak_bytes
    savings = [(peak - changed.estimate().peak_bytes, text) for text, changed in single_changes(run)]
    return [f"{text} (-{saved / GB:.1f} GB)" if saved >= GB else f"{text} (-{saved / GB:.3f} GB)"
            for saved, text in sorted(savings, key=lambda pair: -pair[0]) if saved > 0]
