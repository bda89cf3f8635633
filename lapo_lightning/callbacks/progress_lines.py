"""Progress as plain lines, for output that is not a terminal (a run under ``nohup``, CI, a log file).

:class:`ProgressLines` does it for ``lapo fit``'s optimizer steps; :class:`LineBar` is a plain-line
stand-in for a ``tqdm`` bar (``lapo eval``'s samples).

A progress bar redraws one line in place, which a file cannot show: there it appears once, at
the end. ``lapo fit`` therefore swaps Lightning's bar for :class:`ProgressLines` when stderr is
not a terminal (``cli.fit.LapoCLI.before_fit``); a config may also list it with its own
settings. One line every ``every_n_steps`` optimizer steps or ``every_s`` seconds, whichever
comes first, and one at the last step::

    step 12/75 | reward 0.431 | acc 0.312 | len 812 | 41.2 s/step | 43:15 left
"""

from __future__ import annotations

import sys
import time

import lightning.pytorch as pl

# What a line shows, from the step's logged metrics, when the module logs it.
SHOWN = (("reward/total", "reward", "{:.3f}"), ("accuracy", "acc", "{:.3f}"), ("length/mean", "len", "{:.0f}"),
         ("loss", "loss", "{:.4f}"), ("token_acc", "token acc", "{:.3f}"))


def clock(seconds: float) -> str:
    """``43:15`` or ``2:03:15``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLines(pl.Callback):
    """One plain progress line every ``every_n_steps`` steps or ``every_s`` seconds."""

    def __init__(self, every_n_steps: int = 10, every_s: float = 30.0) -> None:
        if every_n_steps < 1 or every_s <= 0:
            raise ValueError(f"ProgressLines: every_n_steps must be >= 1 and every_s > 0 "
                             f"(got {every_n_steps}, {every_s})")
        self.every_n_steps, self.every_s = every_n_steps, every_s
        self.start = self.last = 0.0
        self.first_step = self.last_step = 0
        self.total: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.last = time.monotonic()
        self.first_step = self.last_step = trainer.global_step  # a resumed run counts its own pace
        self.total = total_steps(trainer, pl_module)  # once: it does not change during the fit

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step, now, total = trainer.global_step, time.monotonic(), self.total
        due = step - self.last_step >= self.every_n_steps or now - self.last >= self.every_s or step == total
        if not trainer.is_global_zero or step == self.last_step or not due:
            return
        self.last, self.last_step = now, step
        sys.stderr.write(self.line(step, total, trainer.callback_metrics, now) + "\n")
        sys.stderr.flush()

    def line(self, step: int, total: int | None, metrics: dict, now: float) -> str:
        parts = [f"step {step}/{total}" if total else f"step {step}"]
        for key, name, fmt in SHOWN:
            if key in metrics:
                parts.append(f"{name} {fmt.format(float(metrics[key]))}")
        done = step - self.first_step
        if done > 0:
            per_step = (now - self.start) / done
            parts.append(f"{per_step:.1f} s/step")
            if total:
                parts.append(f"{clock(per_step * max(total - step, 0))} left")
        return " | ".join(parts)


def total_steps(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
    """The step the run stops at: ``max_steps``, else what ``max_epochs`` gives (batches x the
    module's updates per batch, ``grpo.updates_per_batch``); None if unbounded."""
    if trainer.max_steps and trainer.max_steps > 0:
        return trainer.max_steps
    try:
        batches = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - an unsized loader: no total to show
        return None
    updates = getattr(getattr(pl_module, "grpo", None), "updates_per_batch", 1)
    return int(batches * updates) if batches != float("inf") else None


class LineBar:
    """The part of ``tqdm``'s interface a loop uses (``update``, ``close``), as a line every
    ``every_s`` seconds and one at the end: ``eval base: 120/2000 samples | 3.1 samples/s | 10:05 left``."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", every_s: float = 30.0) -> None:
        self.total, self.n, self.desc, self.unit, self.every_s = total, initial, desc, unit, every_s
        self.first = initial
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every_s:
            self.write()

    def close(self) -> None:
        if self.n != self.first or self.n == self.total:
            self.write()

    def write(self) -> None:
        now = time.monotonic()
        self.last = now
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s"]
        rate = (self.n - self.first) / max(now - self.start, 1e-9)
        if self.n > self.first:
            parts.append(f"{rate:.1f} {self.unit}s/s")
            parts.append(f"{clock(max(self.total - self.n, 0) / rate)} left")
        sys.stderr.write(" | ".join(parts) + "\n")
        sys.stderr.flush()
