"""``auto`` sizes: the largest micro-batch and rollouts per generate call that fit the device.

Flow: ``memory_check.check_before_loading`` (``lapo fit``'s start-up estimate) and ``lapo check`` call
:func:`resolve_auto` once the model's shape, the longest prompt and the device's total
memory are known; every later reader sees plain numbers. Pure arithmetic over
:func:`lapo_lightning.safety.cost.estimate`: nothing is loaded or measured.

The peak is ``weights + LoRA state + max(generation, training)``, so the two sizes are
chosen independently: the most rows per ``generate`` call whose KV cache and sampler fit,
and the largest divisor of the rollout batch (``data.problems_per_step x model.grpo.group_size``)
whose training micro-batch fits, each within ``1 - SAFETY_MARGIN`` of the device. Rows per
call are a multiple of the group size when at least one whole group fits.
"""

from __future__ import annotations

from dataclasses import replace

from lapo_lightning.config import AUTO
from lapo_lightning.safety.cost import GB
from lapo_lightning.safety.cost_advice import RunSettings

SAFETY_MARGIN = 0.10
"""Share of the device that ``auto`` leaves free: the CUDA context (0.3-0.5 GB), allocator
fragmentation, and the estimate's own error: on an H200, one training micro-step at the 1.5B
shape reserved 4-8% more than estimated (while its tensors took 16-19% less)."""


class AutoSizeError(ValueError):
    """No size fits: the message names the setting and what to change."""


def has_auto(grpo, generation) -> bool:
    """Whether a GRPOConfig / GenerationConfig pair leaves a size to :func:`resolve_auto`."""
    return AUTO in (grpo.micro_batch_size, generation.max_rollouts_per_call)


def resolve_auto(run: RunSettings, total: int | None) -> tuple[RunSettings, list[str]]:
    """``run`` with every ``auto`` size replaced by a number, and one line per choice made.

    Example: 16 problems x G 8 on a 12 GB card at the stage-1 shape ->
    ``model.grpo.micro_batch_size auto -> 8`` (a divisor of 128) and the most rows per call.
    """
    if not has_auto(run.grpo, run.generation):
        return run, []
    if total is None:
        raise AutoSizeError("model.grpo.micro_batch_size / model.generation.max_rollouts_per_call: 'auto' needs the "
                            "device's total memory, which is unknown here; set numbers instead")
    usable = (1 - SAFETY_MARGIN) * total
    rollouts = run.problems_per_step * run.grpo.group_size
    # Explore each size with the other at 1, so the other phase never decides the peak.
    floor = replace(run, grpo=replace(run.grpo, micro_batch_size=1) if run.grpo.micro_batch_size == AUTO else run.grpo,
                    generation=replace(run.generation, max_rollouts_per_call=1)
                    if run.generation.max_rollouts_per_call == AUTO else run.generation)
    lines = []
    if run.grpo.micro_batch_size == AUTO:
        sizes = [m for m in range(rollouts, 0, -1) if rollouts % m == 0]
        micro = _largest(sizes, lambda m: replace(floor, grpo=replace(floor.grpo, micro_batch_size=m)),
                         usable, "model.grpo.micro_batch_size", "training", total)
        floor = replace(floor, grpo=replace(floor.grpo, micro_batch_size=micro))
        lines.append(f"model.grpo.micro_batch_size auto -> {micro} (a divisor of the {rollouts} rollouts per step)")
    if run.generation.max_rollouts_per_call == AUTO:
        # Whole groups first: CompactDecode prefills each distinct prompt of a call once.
        group = run.grpo.group_size
        whole = list(range(rollouts - rollouts % group, 0, -group))
        rows = _largest(whole + [r for r in range(min(group, rollouts) - 1, 0, -1)],
                        lambda r: replace(floor, generation=replace(floor.generation, max_rollouts_per_call=r)),
                        usable, "model.generation.max_rollouts_per_call", "generation", total)
        floor = replace(floor, generation=replace(floor.generation, max_rollouts_per_call=rows))
        lines.append(f"model.generation.max_rollouts_per_call auto -> {rows} (of {rollouts} rollouts per step)")
    note = f"the largest that fit {1 - SAFETY_MARGIN:.0%} of {total / GB:.1f} GB by the estimate"
    return floor, [f"{line}: {note}" for line in lines]


def _largest(sizes: list[int], run_with, usable: float, key: str, phase: str, total: int) -> int:
    """The first of ``sizes`` (largest first) whose estimated peak fits ``usable`` bytes."""
    for size in sizes:
        if run_with(size).estimate().peak_bytes <= usable:
            return size
    from lapo_lightning.safety.cost_advice import what_lowers_it

    smallest = run_with(sizes[-1])
    other = [change for change in what_lowers_it(smallest) if not change.startswith(key)]
    raise AutoSizeError(
        f"{key}: auto found no size that fits: even {sizes[-1]} needs {smallest.estimate().peak_bytes / GB:.1f} GB "
        f"({phase} included), over the {usable / GB:.1f} GB usable of {total / GB:.1f} GB; change "
        f"{'; '.join(other[:3]) or 'the model or the device'}")
