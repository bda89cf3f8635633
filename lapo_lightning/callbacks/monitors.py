"""Training monitors: sample completions for a human to read, and silent-failure warnings.

Both read the ``StepSummary`` in ``training_step``'s output; neither changes training.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lapo_lightning.algo import zero_spread_groups
from lapo_lightning.safety.health import group_health
from lapo_lightning.types import StepSummary


class SampleLogger(pl.Callback):
    """Print a small table of completions on the first batch, every ``every_n_steps`` batches
    and on the last one (so even a short run shows its start and its end), and append them to
    ``<log_dir>/samples.jsonl``.

    A second SampleLogger on the same trainer (say one from the YAML and one added on the
    command line) writes its own ``samples.1.jsonl`` (the k-th one ``samples.<k>.jsonl``):
    sharing one file made each step's rows appear twice, interleaved.

    Args:
        every_n_steps: how often (in batches); 0 disables.
        rows: completions shown per table.
        max_chars: completion text shown per row in the printed table (the file keeps all).
    """

    def __init__(self, every_n_steps: int = 10, rows: int = 4, max_chars: int = 160) -> None:
        self.every_n_steps, self.rows, self.max_chars = every_n_steps, rows, max_chars
        self.filename = "samples.jsonl"
        self._batches = 0
        self._unlogged: StepSummary | None = None  # the latest batch, when it was not logged

    def setup(self, trainer, pl_module, stage: str) -> None:
        others = [c for c in trainer.callbacks if isinstance(c, SampleLogger)]
        k = next(i for i, c in enumerate(others) if c is self)
        self.filename = "samples.jsonl" if k == 0 else f"samples.{k}.jsonl"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        summary: StepSummary = outputs["summary"]
        self._unlogged = summary
        if not self.every_n_steps or (self._batches - 1) % self.every_n_steps:
            return
        self._unlogged = None
        self.show(trainer, summary)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.every_n_steps and self._unlogged is not None:
            self.show(trainer, self._unlogged)
        self._unlogged = None

    def show(self, trainer, summary: StepSummary) -> None:
        """Print the table and append the rows (rank 0 only)."""
        if not trainer.is_global_zero:
            return
        records = [
            {
                "step": summary.step,
                "problem_id": summary.problem_ids[int(summary.group_index[i])],
                "length": int(summary.lengths[i]),
                "correct": bool(summary.correct[i]),
                "reward": round(float(summary.rewards["total"][i]), 4),
                "text": summary.texts[i],
            }
            for i in range(min(self.rows, len(summary.texts)))
        ]
        lines = [f"samples at step {summary.step}:", f"{'problem':<20} {'len':>5} {'ok':>3} {'reward':>7}  completion"]
        for r in records:
            text = r["text"][: self.max_chars].replace("\n", "\\n")
            lines.append(f"{r['problem_id'][:20]:<20} {r['length']:>5} {'y' if r['correct'] else 'n':>3} "
                         f"{r['reward']:>7.3f}  {text}")
        rank_zero_info("\n".join(lines))
        if trainer.log_dir:
            path = Path(trainer.log_dir) / self.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)


_ADVICE = {
    "truncation": "completions hit model.generation.max_new_tokens{cap}; raise it or shorten the task",
    "zero_spread": "every group got equal rewards, so every advantage is 0 and the policy gradient is 0 "
                   "(train/skipped_zero_advantage counts the updates skipped for it when kl_coef is 0)",
}


class TrainingHealthMonitor(pl.Callback):
    """Warn when training is silently learning nothing.

    If every completion is truncated, or every group's rewards are identical (zero
    advantage everywhere), the policy gradient is zero or meaningless. When the share of
    either stays above ``threshold`` for ``patience`` consecutive batches, warn once per
    episode with the fix to try. A run that ends before ``patience`` batches is judged at
    the end of training on all the batches it had, so a short trial run warns too.

    The zero-advantage warning says which kind of group the window held (all wrong, all
    correct, all truncated: the ``groups/*`` metrics) and puts the likely cause first: a task
    too hard for the model, a length cap too short, a task too easy, or a sampling temperature
    of 0 (every completion of a group identical) / rewards that do not tell completions apart.
    """

    def __init__(self, threshold: float = 0.95, patience: int = 5) -> None:
        self.threshold, self.patience = threshold, patience
        self._history = {"truncation": deque(maxlen=patience), "zero_spread": deque(maxlen=patience)}
        # Per step, the share of groups all wrong / all correct / all truncated (for the advice).
        self._groups: deque[dict[str, float]] = deque(maxlen=patience)
        self._warned = {key: False for key in self._history}
        self._settings: dict[str, float] = {}
        self.warnings: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        summary: StepSummary = outputs["summary"]
        generation = getattr(pl_module, "generation", None)
        if generation is not None:
            self._settings = {"temperature": generation.temperature, "max_new_tokens": generation.max_new_tokens}
        self._history["truncation"].append(float(summary.truncated.float().mean()))
        self._history["zero_spread"].append(float(zero_spread_share(summary)))
        self._groups.append(group_shares(summary))
        for key, history in self._history.items():
            stuck = len(history) == self.patience and min(history) >= self.threshold
            if stuck and not self._warned[key]:
                self._warn(key, f"for {self.patience} steps (step {summary.step})")
            self._warned[key] = stuck

    def on_train_end(self, trainer, pl_module) -> None:
        for key, history in self._history.items():
            if 0 < len(history) < self.patience and min(history) >= self.threshold:
                self._warn(key, f"in all {len(history)} steps of this run (fewer than patience={self.patience})")

    def _warn(self, key: str, when: str) -> None:
        cap = self._settings.get("max_new_tokens")
        advice = _ADVICE[key].format(cap=f" ({cap})" if cap is not None else "")
        if key == "zero_spread":
            advice += "; " + zero_advantage_causes(list(self._groups), self._settings)
        message = f"{key} share >= {self.threshold:.0%} {when}: {advice}; training is learning nothing"
        self.warnings.append(message)
        rank_zero_warn(message)

    def state_dict(self) -> dict:
        return {key: list(values) for key, values in self._history.items()} | {"groups": list(self._groups)}

    def load_state_dict(self, state_dict: dict) -> None:
        for key, values in state_dict.items():
            (self._groups if key == "groups" else self._history[key]).extend(values)


def zero_spread_share(summary: StepSummary) -> float:
    flags = zero_spread_groups(summary.rewards["total"], summary.group_index, len(summary.problem_ids))
    return float(flags.float().mean())


def group_shares(summary: StepSummary) -> dict[str, float]:
    """Share of the step's groups that were all wrong, all correct and all truncated."""
    counts = group_health(summary.correct, summary.truncated, summary.rewards["total"], summary.group_index,
                          len(summary.problem_ids))
    groups = max(len(summary.problem_ids), 1)
    return {key: counts[key] / groups for key in ("all_wrong", "all_correct", "all_truncated")}


def zero_advantage_causes(window: list[dict[str, float]], settings: dict[str, float]) -> str:
    """The likely causes of zero advantage everywhere, the one the groups point at first.

    ``window``: per step, the shares from :func:`group_shares`; ``settings``: the module's
    ``temperature`` and ``max_new_tokens`` when known. Example: every group all wrong and all
    truncated -> 'the length cap is too short ...' first, then 'the task is too hard ...'.
    """
    mean = {key: sum(step[key] for step in window) / len(window) for key in ("all_wrong", "all_correct",
                                                                             "all_truncated")} if window else {}
    temperature, cap = settings.get("temperature"), settings.get("max_new_tokens")
    seen = ", ".join(f"{share:.0%} of groups {key.replace('_', ' ')}" for key, share in mean.items())
    causes = [
        (mean.get("all_truncated", 0.0), "the length cap is too short (every completion of a group cut off: raise "
                                          f"model.generation.max_new_tokens{f', now {cap}' if cap else ''})"),
        (mean.get("all_wrong", 0.0), "the task is too hard for the model (no completion of a group correct: "
                                      "easier data, a stronger model or a larger model.grpo.group_size)"),
        (mean.get("all_correct", 0.0), "the task is too easy (every completion of a group correct) or the "
                                        "rewards do not tell correct completions apart"),
        # Temperature 0 makes every completion of a group identical: the cause, when set.
        (2.0 if temperature is not None and temperature <= 0 else 0.0,
         f"sampling temperature {temperature} (model.generation.temperature) makes a group's completions "
         "identical; use about 1.0 for training"),
    ]
    ordered = [text for share, text in sorted(causes, key=lambda c: -c[0]) if share > 0]
    if not ordered:  # groups of mixed correctness and still equal rewards
        ordered = ["rewards that do not vary between completions (none depends on correctness or length)"]
        if temperature is None:
            ordered.insert(0, "sampling temperature 0 (model.generation.temperature makes a group's completions "
                              "identical)")
    return (f"in these steps {seen}; " if seen else "") + "likely causes: " + "; ".join(ordered)
