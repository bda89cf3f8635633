"""Pure GRPO/LAPO algorithm functions (torch + stdlib only; no lightning/transformers/peft).

groups: count, sum, mean, std, min and max per group of rollouts (every group statistic
is built from them). advantages: group-standardised rewards. logprobs: per-token log-probs of sampled tokens;
head_logprobs: the same from hidden states, through the output head in chunks.
losses: clipped surrogate, k3 KL, token aggregation, grpo_loss. minibatches: the optimizer
steps' shares of one generation's rollouts, and importance-ratio statistics. length_rewards / length_stats:
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
from .minibatches import generation_mini_batches, problem_seed, ratio_sums, ratio_summary
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
    "generation_mini_batches",
    "grpo_loss",
    "has_band",
    "head_logprobs",
    "k3_kl",
    "problem_seed",
    "masked_mean",
    "ratio_sums",
    "ratio_summary",
    "refine_targets",
    "sequence_mean",
    "token_logprobs",
    "token_mean",
    "zero_spread_groups",
]
