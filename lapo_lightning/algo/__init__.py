"""Pure GRPO/LAPO algorithm functions (torch + stdlib only; no lightning/transformers/peft).

groups: count, sum, mean, std, min and max per group of rollouts (every group statistic
is built from them). advantages: group-standardised rewards. logprobs: per-token log-probs of sampled tokens;
head_logprobs: the same from hidden states, through the output head in chunks.
losses: clipped surrogate, k3 KL, token aggregation, grpo_loss. length_rewards / length_stats:
LAPO's band (stage 1) and Gaussian (stage 2) length rewards, statistics and target refinement.
"""

from .advantages import group_advantages, zero_spread_groups
from .groups import count_groups, group_count, group_max, group_mean, group_min, group_std, group_sum
from .length_rewards import band_length_reward, gaussian_length_reward
from .length_stats import (
    GroupLengthStats,
    fill_missing_targets,
    group_length_stats,
    has_band,
    refine_targets,
)
from .head_logprobs import DEFAULT_CHUNK_TOKENS, head_logprobs
from .logprobs import completion_logprobs, masked_mean, token_logprobs
from .losses import (
    AGGREGATIONS,
    Aggregation,
    LossTerms,
    aggregate,
    clipped_surrogate,
    constant_norm,
    grpo_loss,
    k3_kl,
    sequence_mean,
    token_mean,
)

__all__ = [
    "AGGREGATIONS",
    "Aggregation",
    "DEFAULT_CHUNK_TOKENS",
    "GroupLengthStats",
    "LossTerms",
    "aggregate",
    "band_length_reward",
    "clipped_surrogate",
    "completion_logprobs",
    "constant_norm",
    "count_groups",
    "fill_missing_targets",
    "gaussian_length_reward",
    "group_advantages",
    "group_count",
    "group_length_stats",
    "group_max",
    "group_mean",
    "group_min",
    "group_std",
    "group_sum",
    "grpo_loss",
    "has_band",
    "head_logprobs",
    "k3_kl",
    "masked_mean",
    "refine_targets",
    "sequence_mean",
    "token_logprobs",
    "token_mean",
    "zero_spread_groups",
]
