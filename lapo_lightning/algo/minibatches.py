"""One generation, several optimizer steps: which rollouts each step trains on.

Called from ``GRPOModule.update`` once per pass over a generation's rollouts. With
``model.grpo.steps_per_generation`` k the rollouts of k steps' worth of problems are sampled
at once and split into k mini-batches, one per optimizer step. The split is stratified by
group: each problem's G rollouts are dealt in a random order, G / k to every mini-batch, so
every step sees every problem of the generation (the advantages were computed over whole
groups before the split). The order is drawn per problem from (seed, the generation's first
step, the pass, the problem id), so a rollout lands in the same mini-batch whichever process
holds it: two processes optimise exactly the objective of one, and a resumed run repeats the
split of an uninterrupted one. k = 1 keeps the whole generation, in order, as one step: the
one-update-per-generation loop exactly.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def problem_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (ints and strings), the same in every process and run.

    Example: ``problem_seed(0, 8, 0, "q17")`` is one fixed integer; Python's ``hash`` is salted per process.
    """
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generation_mini_batches(group_index: Tensor, seeds: list[int], steps: int) -> list[Tensor]:
    """``steps`` index tensors into the rollouts, together a partition of them; mini-batch m
    holds, of every group b, the rows whose dealt slot is m (G / steps rows each).

    group_index [N] long, groups in [0, B) of G rows each; ``seeds[b]`` orders group b's deal
    (:func:`problem_seed`). ``[arange(N)]`` when steps is 1 (nothing is drawn). Rows keep their
    order within a mini-batch. Example: group_index [0, 0, 1, 1], steps 2 -> two mini-batches
    with one row of each group, e.g. [1, 2] and [0, 3].
    """
    rows = group_index.numel()
    if steps == 1:
        return [torch.arange(rows, device=group_index.device)]
    groups = group_index.cpu()
    sizes = torch.bincount(groups, minlength=len(seeds))
    if steps < 1 or (sizes % steps).any():
        raise ValueError(f"groups of {sizes.tolist()} rollouts do not split into {steps} equal shares")
    order = torch.sort(groups, stable=True).indices  # rows grouped, in row order within each group
    slot = torch.empty(rows, dtype=torch.long)
    start = 0
    for b, size in enumerate(sizes.tolist()):
        deal = torch.randperm(size, generator=torch.Generator().manual_seed(seeds[b])) % steps
        slot[order[start:start + size]] = deal
        start += size
    return [torch.nonzero(slot == m).flatten().to(group_index.device) for m in range(steps)]


def ratio_sums(ratio: Tensor, clipped: Tensor, mask: Tensor) -> Tensor:
    """[4] float64: completion tokens, sum of the importance ratio, sum of its square and the
    tokens whose clip is active, over ``mask``. Sums add over micro-batches and processes;
    :func:`ratio_summary` turns them into a mean, a spread and a clipped fraction.

    Example: ratio [[1.0, 1.5]], clipped [[False, True]], mask all True -> [2, 2.5, 3.25, 1].
    """
    mask = mask.bool()
    r = torch.where(mask, ratio.detach(), torch.zeros_like(ratio)).double()
    return torch.stack([mask.sum().double(), r.sum(), (r * r).sum(), (clipped & mask).sum().double()])


def ratio_summary(sums: Tensor) -> dict[str, float]:
    """Mean and standard deviation of the ratio over the tokens, and the clipped share.

    Example: [2, 2.5, 3.25, 1] -> mean 1.25, std 0.25, clip_frac 0.5; no tokens -> ratio 1, spread 0.
    """
    tokens, total, squares, clipped = (float(x) for x in sums)
    if tokens == 0:
        return {"ratio_mean": 1.0, "ratio_std": 0.0, "clip_frac": 0.0}
    mean = total / tokens
    return {"ratio_mean": mean, "ratio_std": max(squares / tokens - mean * mean, 0.0) ** 0.5,
            "clip_frac": clipped / tokens}
