"""Numerical health: the finiteness checks and messages that keep NaN/inf out of training.

Where it sits in the flow: ``GRPOModule.update`` asks :func:`all_finite` about the gradients
after each backward and skips an optimizer step that would apply NaN/inf (stopping with
:func:`nonfinite_stop_message` after a run of them); ``GRPOModule.on_save_checkpoint`` (and
the adapter export) refuse to write weights that :func:`nonfinite_parameters` names; the
per-step group counts (:func:`group_health`) feed the ``groups/*`` metrics and the
``TrainingHealthMonitor`` warning. The functions are pure functions of tensors, except
:func:`newest_checkpoint`, which reads a Trainer's checkpoint callbacks and folders;
:class:`NonFiniteGuard` is the module's side of it (skip, count, stop), mixed into ``GRPOModule``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lapo_lightning.algo import zero_spread_groups
from lapo_lightning.safety.checkpointing import newest_whole


class NonFiniteTrainingError(RuntimeError):
    """Raised after ``model.max_nonfinite_steps`` optimizer steps in a row had a NaN/inf loss or gradient."""


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of writing a checkpoint or adapter whose trainable weights hold NaN/inf."""


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True when no tensor holds a NaN or an inf (an empty sequence is finite).

    One fused max-abs per tensor (``torch._foreach_norm`` with ord inf, grouped by device and
    dtype inside torch), then a single host sync. The inf-norm never overflows (unlike the
    2-norm of large fp16 values) and propagates NaN. Example: ``[tensor([1., nan])]`` -> False.
    """
    if not tensors:
        return True
    norms = torch._foreach_norm(list(tensors), math.inf)
    return bool(torch.stack([n.float().to(norms[0].device) for n in norms]).isfinite().all())


def nonfinite_parameters(named_tensors: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the tensors that hold a NaN or an inf, in the order given.

    For checkpoints and adapters: call with ``module.named_parameters()`` (only trainable
    ones matter, the caller filters) or a ``state_dict().items()``; an empty list means safe
    to write. Example: ``[("a", tensor([1.])), ("b", tensor([inf]))]`` -> ``["b"]``.
    """
    named = [(name, t.detach()) for name, t in named_tensors if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return []
    norms = torch._foreach_norm([t for _, t in named], math.inf)
    bad = torch.stack([n.float().to(norms[0].device) for n in norms]).isfinite().logical_not().cpu().tolist()
    return [name for (name, _), b in zip(named, bad) if b]


def nonfinite_weights_message(names: list[str], what: str) -> str:
    """One line for :class:`NonFiniteWeightsError`: ``what`` is e.g. 'checkpoint at step 4'."""
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return (f"refusing to write the {what}: trainable weight {names[0]!r}{more} holds NaN/inf, so nothing "
            "was written; the weights went non-finite during training (see train/skipped_nonfinite); resume "
            "from the last checkpoint written before, with a lower model.optim.lr or model.policy.dtype "
            "float32/bfloat16 instead of float16")


def newest_checkpoint(trainer) -> str | None:
    """Path of the newest checkpoint the trainer's ``ModelCheckpoint`` callbacks have written.

    Looks at each callback's ``last_model_path`` and ``best_model_path`` and at the ``.ckpt``
    files in its ``dirpath`` (those of an earlier run in the same folder count: a resumed run
    keeps writing there), and returns the newest whole archive
    (:func:`lapo_lightning.safety.checkpointing.newest_whole`), or None. Checkpoints are never written
    with non-finite weights (``GRPOModule.on_save_checkpoint``), so that one is the last good one.
    """
    candidates: set[Path] = set()
    for callback in getattr(trainer, "checkpoint_callbacks", None) or []:
        for attr in ("last_model_path", "best_model_path"):
            if getattr(callback, attr, ""):
                candidates.add(Path(getattr(callback, attr)))
        dirpath = getattr(callback, "dirpath", None)
        if dirpath and Path(dirpath).is_dir():
            candidates.update(Path(dirpath).glob("*.ckpt"))
    good = newest_whole(candidates)
    return str(good) if good else None


def nonfinite_stop_message(streak: int, first_step: int, last_step: int, checkpoint: str | None,
                           weights_bad: list[str] | None = None) -> str:
    """The text of :class:`NonFiniteTrainingError`: what happened, what state the weights are in,
    and where to resume from.

    Example: ``nonfinite_stop_message(3, 5, 7, "ck/step=5.ckpt")`` -> "3 optimizer steps in a row
    (trainer.global_step 5 to 7) had a NaN/inf loss or gradient ...".
    """
    steps = f"trainer.global_step {first_step}" + (f" to {last_step}" if last_step != first_step else "")
    head = (f"{streak} optimizer step{'s' if streak > 1 else ''} in a row ({steps}) had a NaN/inf loss or "
            f"gradient (model.max_nonfinite_steps={streak}); each was skipped, so ")
    if weights_bad:
        state = (f"the weights were not updated by them, but trainable weight {weights_bad[0]!r} already holds "
                 "NaN/inf (an earlier finite step overflowed it); ")
    else:
        state = "the weights were not updated by them and are still finite; "
    where = (f"the last good checkpoint is {checkpoint} (resume with --ckpt_path {checkpoint})" if checkpoint
             else "no checkpoint was written yet (add a ModelCheckpoint with every_n_train_steps to keep one)")
    causes = ("likely causes: a custom reward or plugin producing NaN/inf, model.policy.dtype float16 "
              "(try bfloat16 or float32), or model.optim.lr too high")
    return head + state + where + "; " + causes


def nonfinite_sampling_message(step: int, dtype: str, device: str, weights_bad: list[str],
                               checkpoint: str | None) -> str:
    """The text of :class:`NonFiniteTrainingError` when sampling met NaN/inf next-token
    probabilities (torch's "probability tensor contains inf, nan or element < 0"): whether the
    trained weights or the forward pass itself is to blame, and what to do.

    Example: finite weights, float16 on cpu -> '... the trainable weights are finite, so the
    forward pass overflows in model.policy.dtype=float16 on cpu: use bfloat16 or float32 ...'.
    """
    head = f"sampling at trainer.global_step {step} met NaN/inf next-token probabilities; "
    if weights_bad:
        why = (f"trainable weight {weights_bad[0]!r}" + (f" (and {len(weights_bad) - 1} more)" if len(weights_bad) > 1
                                                         else "") + " holds NaN/inf")
    else:
        why = (f"the trainable weights are finite, so the forward pass overflows in model.policy.dtype={dtype} "
               f"on {device}: use bfloat16 or float32" + (" (float16 on a CPU is the usual culprit)"
                                                          if dtype == "float16" else ""))
    where = (f"; the last good checkpoint is {checkpoint} (resume with --ckpt_path {checkpoint})" if checkpoint
             else "; no checkpoint was written yet")
    return head + why + where


def group_health(correct: Tensor, truncated: Tensor, total_reward: Tensor, group_index: Tensor,
                 num_groups: int) -> dict[str, int]:
    """Counts of groups that carry no learning signal, for one step's rollouts.

    correct, truncated [N] bool; total_reward [N] float; group_index [N] long in [0, num_groups).
    Returns ``all_truncated`` (every completion hit the length cap), ``all_wrong`` (no correct
    answer), ``all_correct`` and ``zero_spread`` (every reward equal, so every advantage 0; a
    group can be in several). Example: correct [F, F, T, T], truncated [T, T, F, T], rewards
    [0, 0, 1, 1], group_index [0, 0, 1, 1] -> all_truncated 1, all_wrong 1, all_correct 1,
    zero_spread 2.
    """
    index = group_index.long().cpu()
    size = torch.zeros(num_groups).index_add_(0, index, torch.ones(len(index)))
    right = torch.zeros(num_groups).index_add_(0, index, correct.float().cpu())
    cut = torch.zeros(num_groups).index_add_(0, index, truncated.float().cpu())
    present = size > 0
    return {
        "all_truncated": int((present & (cut == size)).sum()),
        "all_wrong": int((present & (right == 0)).sum()),
        "all_correct": int((present & (right == size)).sum()),
        "zero_spread": int((present & zero_spread_groups(total_reward.cpu(), index, num_groups)).sum()),
    }


class NonFiniteGuard:
    """What ``GRPOModule`` does with a NaN/inf loss or gradient, as a mixin of a LightningModule
    (it uses ``trainer``, ``device``, ``global_step``, ``named_parameters`` and the module's
    ``max_nonfinite_steps``): check before each optimizer step, skip a bad one, count them (all of
    them, the current run of consecutive ones and the step that run began at, kept in
    checkpoints) and stop after ``max_nonfinite_steps`` in a row."""

    def reset_nonfinite_counts(self) -> None:
        self.nonfinite_total, self.nonfinite_streak, self.nonfinite_since = 0, 0, -1

    def note_finite_step(self) -> None:
        """A step that ran on finite gradients ends any run of skipped ones."""
        self.nonfinite_streak, self.nonfinite_since = 0, -1

    def gradients_finite(self, opt, loss_finite: bool) -> bool:
        """Whether this optimizer step may run: the loss of every micro-batch and every trainable
        gradient are finite (one fused check, one host sync), agreed over all processes.

        With a GradScaler (``trainer.precision: 16-mixed``) a finite loss with an inf gradient
        is the scaler's normal overflow signal: it skips that step and lowers its scale itself,
        so only a non-finite loss counts here.
        """
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        finite = loss_finite and (scaler is not None or all_finite(grads))
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = torch.tensor([float(not finite)], device=self.device)
            finite = float(self.trainer.strategy.reduce(bad, reduce_op="sum").item()) == 0.0
        return finite

    def skip_nonfinite_step(self, opt, sched) -> None:
        """Drop this step's NaN/inf gradients and step on none; stop after a run of such steps.

        ``opt.step()`` still runs with every gradient set to None: AdamW leaves a parameter
        without a gradient untouched (weights, momentum and its step count), while Lightning
        counts the step, so ``trainer.global_step``, ``max_steps``, the rollout seeds, checkpoint
        cadence and the LR schedule (stepped too) stay keyed to the same counter as in a run
        without the fault, and a resumed run lines up with it. The skipped step is lost, not
        retried. After ``max_nonfinite_steps`` skipped steps in a row this raises
        :class:`NonFiniteTrainingError` (before stepping) naming the newest checkpoint.
        """
        step = self.global_step
        if self.nonfinite_streak == 0:
            self.nonfinite_since = step
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        opt.zero_grad(set_to_none=True)
        if self.nonfinite_streak >= self.max_nonfinite_steps:
            bad = nonfinite_parameters((n, p) for n, p in self.named_parameters() if p.requires_grad)
            checkpoint = newest_checkpoint(self.trainer) if self._trainer is not None else None
            raise NonFiniteTrainingError(nonfinite_stop_message(self.nonfinite_streak, self.nonfinite_since,
                                                                step, checkpoint, bad))
        opt.step()
        sched.step()

    def nonfinite_metrics(self, skipped: int) -> dict[str, float]:
        """This batch's skipped optimizer steps and the run's total (restored on resume)."""
        return {"train/skipped_nonfinite": float(skipped), "train/skipped_nonfinite_total": float(self.nonfinite_total)}

    def nonfinite_counts(self) -> dict[str, int]:
        """The counts a checkpoint keeps (``numerical_health``), so a resumed run goes on counting."""
        return {"skipped_nonfinite": self.nonfinite_total, "nonfinite_streak": self.nonfinite_streak,
                "nonfinite_since": self.nonfinite_since}

    def restore_numerical_health(self, checkpoint: dict) -> None:
        """The counts :meth:`nonfinite_counts` saved (absent in older checkpoints: 0)."""
        health = checkpoint.get("numerical_health", {})
        self.nonfinite_total = int(health.get("skipped_nonfinite", 0))
        self.nonfinite_streak = int(health.get("nonfinite_streak", 0))
        self.nonfinite_since = int(health.get("nonfinite_since", -1))
