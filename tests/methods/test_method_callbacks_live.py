"""The method callbacks inside a real ``lapo fit``: ThinkPrune's CapSchedule changes the cap the
sampler obeys step by step, and L1Targets states a target in every prompt (its config's
``L1Max(missing: error)`` stops the run at the first prompt without one)."""

from __future__ import annotations

import pytest

from tests.clitools import config_in, fit, step_metrics

pytestmark = pytest.mark.slow
TINY = ("--model.policy.model", "tiny:llama-h64-l2-n", "--trainer.log_every_n_steps", "1",
        "--data.problems_per_step", "8", "--data.max_problems", "40")


def test_cap_schedule_shrinks_the_generation_cap_every_round(tmp_path):
    # A random model rarely samples EOS, so most rollouts run to the cap in force.
    config = config_in(tmp_path, "compare/demo/thinkprune.yaml",
                       **{"caps: [64, 48, 40], every_n_steps: 25": "caps: [24, 16, 8], every_n_steps: 2"})
    cli = fit(config, *TINY, "--trainer.max_steps", "5")
    rows = step_metrics(cli)
    assert [float(r["thinkprune/cap"]) for r in rows] == [24, 24, 16, 16, 8]
    for row, cap in zip(rows, [24, 24, 16, 16, 8]):
        assert 0.75 * cap < float(row["length/mean"]) <= cap and float(row["length/truncation_rate"]) > 0.5
    assert [float(r["reward/capped_accuracy"]) for r in rows] == [0.0] * 5  # truncated scores 0
    assert cli.model.generation.max_new_tokens == 8


def test_l1_targets_state_a_budget_in_every_training_prompt(tmp_path):
    config = config_in(tmp_path, "compare/demo/l1_max.yaml", **{"max_new_tokens: 128": "max_new_tokens: 24"})
    # L1Max(missing: error) raises on the first prompt without a target.
    rows = step_metrics(fit(config, *TINY, "--trainer.max_steps", "2"))
    assert len(rows) == 2 and all(float(r["reward/l1_max"]) == 0.0 for r in rows)  # random model: never correct
