"""Plugins (by class_path) for the multi-process tests, imported by the ``lapo`` subprocesses.

:class:`ReplaySampler` makes rollouts that depend on each problem alone, never on the
process, the batch or the random generator, so one process with B problems and two with B/2
each train on identical rollouts and must compute the same gradient. :class:`GradRecorder`
saves that gradient; :class:`KillRunAt` is ``kill -9`` of the whole run at a chosen step.
"""

from __future__ import annotations

import hashlib
import os
import signal

import lightning.pytorch as pl
import torch

from lapo_lightning.rollout import Sampler, assemble_rollouts, encode_prompts


class ReplaySampler(Sampler):
    """Slot g of problem q: the answer (2 slots in 3) and 1-12 filler tokens (1-6 when the
    prompt states a budget, so stage 2 shortens and Eq. 8 acts), then EOS, all from hash(id)."""

    def sample(self, model, tokenizer, prompts, problems, group_size, gen):
        device = next(model.parameters()).device
        prompt_ids, prompt_mask, group_index = encode_prompts(tokenizer, prompts, group_size, device)
        rows = []
        for pid, answer, budget in zip(problems.problem_ids, problems.answers, problems.budgets):
            h = int(hashlib.sha1(pid.encode()).hexdigest(), 16)
            spread = 12 if budget is None else 6
            for g in range(group_size):
                text = (answer if (h >> g) % 3 else "") + " ab" * (1 + (h >> (4 * g + 8)) % spread)
                ids = tokenizer.encode(text, add_special_tokens=False)[: gen.max_new_tokens - 1]
                rows.append(ids + [tokenizer.eos_token_id])
        width = max(len(r) for r in rows)
        completion_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=device)
        return assemble_rollouts(tokenizer, problems, group_index, prompt_ids, prompt_mask, completion_ids, gen)


class GradRecorder(pl.Callback):
    """Rank 0 saves {step: {name: grad}} of the trainable weights before each of the first
    ``steps`` optimizer steps."""

    def __init__(self, path: str, steps: int = 1) -> None:
        self.path, self.steps, self.grads = path, steps, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step < self.steps and trainer.is_global_zero:
            self.grads[trainer.global_step] = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                                               if p.grad is not None}
            torch.save(self.grads, self.path)


class KillRunAt(pl.Callback):
    """SIGKILL every process of the run (its process group) when training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.killpg(os.getpgid(0), signal.SIGKILL)
