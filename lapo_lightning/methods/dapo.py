"""DAPO overlong reward shaping: a soft, linear penalty for answers that approach the length cap.

Flow: a reward plugin, scored by ``GRPOModule`` after sampling and verification like every
other :class:`~lapo_lightning.rewards.Reward`; it is *added* to correctness (use it next to
``Accuracy``). It looks at each rollout alone (no group statistics).

Paper: Yu et al. (2025), "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
(arXiv 2503.14476), "Soft Overlong Punishment". With L the completion length, L_max the
longest allowed length and L_cache the width of the punishment interval::

    R_length(L) = 0                                  L <= L_max - L_cache
                  ((L_max - L_cache) - L) / L_cache  L_max - L_cache < L <= L_max
                  -1                                 L > L_max

It is 0 up to L_max - L_cache, then falls linearly to -1 at L = L_max.

Defaults and choices:
- ``max_length`` (L_max) has no default: it should equal ``model.generation.max_new_tokens``
  (the paper's L_max is its generation cap, 20480), and a reward cannot see the generation
  config, so the YAML must state it.
- ``cache_length`` (L_cache): the paper uses 4096 of 20480, i.e. one fifth of the cap; the
  default ``None`` keeps that ratio (``max_length // 5``: 4096 for 20480, 204 for 1024).
  Give a number to set it in tokens.
- ``penalize_truncated`` (default True): a rollout that was cut off (``batch.truncated``) gets
  -1 whatever its length. With L_max equal to the generation cap this is the paper's formula
  (a cut-off answer has L = L_max, so -1); it also covers rollouts stopped by a chunk limit
  below the cap and a ``max_length`` set above the cap. False: the length alone decides.
- DAPO's separate "overlong filtering" (masking truncated samples out of the loss) is not
  part of this reward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.rewards import Reward
from lapo_lightning.types import RolloutBatch


def overlong_penalty(lengths: Tensor, max_length: int, cache_length: int, truncated: Tensor | None = None) -> Tensor:
    """[N] float in [-1, 0]: DAPO's soft overlong punishment per rollout (module docstring).

    lengths [N] long; truncated [N] bool or None (None: no rollout is forced to -1).
    Example: max_length 100, cache_length 20 -> lengths [80, 90, 100, 120] give
    [0.0, -0.5, -1.0, -1.0] ((80 - 90) / 20 = -0.5, (80 - 100) / 20 = -1, above 100 -> -1).
    """
    if cache_length <= 0 or cache_length > max_length:
        raise ValueError(f"need 0 < cache_length <= max_length, got cache_length {cache_length}, "
                         f"max_length {max_length}")
    x = lengths.to(torch.float64)
    penalty = ((max_length - cache_length - x) / cache_length).clamp(min=-1.0, max=0.0)
    if truncated is not None:
        penalty = torch.where(truncated.bool().to(penalty.device), torch.full_like(penalty, -1.0), penalty)
    return penalty.to(torch.float32)


class OverlongPenalty(Reward):
    """DAPO soft overlong punishment (add it to ``Accuracy``): 0 up to ``max_length -
    cache_length`` tokens, then linear down to -1 at ``max_length``; -1 beyond it and, by
    default, for every truncated rollout.

    Args:
        max_length: L_max in tokens; set it to ``model.generation.max_new_tokens``.
        cache_length: L_cache in tokens; None = ``max_length // 5`` (the paper's 4096 of 20480).
        penalize_truncated: give -1 to truncated rollouts whatever their length.
        weight: multiplier in the total reward (1.0, as in the paper).
        name: metric name (``reward/<name>``), default ``overlong_penalty``.
    """

    def __init__(self, max_length: int, cache_length: int | None = None, penalize_truncated: bool = True,
                 weight: float = 1.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"OverlongPenalty: max_length must be a whole number of tokens >= 1 "
                             f"(set it to model.generation.max_new_tokens), got {max_length!r}")
        if cache_length is None:
            cache_length = max(1, max_length // 5)
        if isinstance(cache_length, bool) or not isinstance(cache_length, int) or not 0 < cache_length <= max_length:
            raise ValueError(f"OverlongPenalty: cache_length must be a whole number of tokens in "
                             f"[1, max_length={max_length}], got {cache_length!r}")
        self.max_length, self.cache_length = max_length, cache_length
        self.penalize_truncated = bool(penalize_truncated)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        truncated = batch.truncated if self.penalize_truncated else None
        return overlong_penalty(batch.lengths, self.max_length, self.cache_length, truncated)
