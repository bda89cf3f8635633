"""Supervised fine-tuning: the warm start that gives RL a model which already solves problems.

Flow: ``lapo fit --config configs/demo/sft.yaml`` plugs :class:`SFTModule` and
:class:`SFTDataModule` into the same CLI as GRPO. Each batch holds problems and their
reference traces (the text after the prompt's ``<think>``); the module renders prompts with
the same :class:`~lapo_lightning.prompts.PromptTemplate` RL uses, so SFT and RL see the same
prompt text, and trains on the trace tokens plus EOS (prompt tokens carry no loss).

With ``budget_fraction`` > 0 a share of the prompts carry the stage-2 budget sentence stating
the trace's *real* length in tokens (counted as RL counts a completion: its tokens plus EOS),
so the model learns what the number means before stage 2 asks it to follow one.
``full_finetune`` trains every weight (a random-init demo model); otherwise a LoRA adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import lightning.pytorch as pl
import torch

from lapo_lightning.config import OptimConfig
from lapo_lightning.data import LapoDataModule
from lapo_lightning.problem_sets.files import DataError, Problem
from lapo_lightning.order import EpochShuffle
from lapo_lightning.policy import PolicyConfig, load_base_model, load_policy, load_tokenizer
from lapo_lightning.prompts import PlainPrompt, PromptTemplate


@dataclass
class SFTBatch:
    problem_ids: list[str]
    problems: list[str]  # problem text, rendered into a prompt by the module
    completions: list[str]  # reference trace: everything after the prompt's <think>

    def __len__(self) -> int:
        return len(self.problems)


def collate_sft(items: list[Problem], field: str) -> SFTBatch:
    return SFTBatch([p.id for p in items], [p.problem for p in items], [p.extra[field] for p in items])


class SFTDataModule(LapoDataModule):
    """Problems with a reference completion each, batched as :class:`SFTBatch` of similar lengths.

    Args:
        completion_field: field holding the completion to imitate.
        **kwargs: as :class:`~lapo_lightning.data.LapoDataModule` (``problems_per_step`` is
            the batch size).
    """

    def __init__(self, *args, completion_field: str = "solution", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.completion_field = completion_field

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for key, problems in (("data.train_file", self._train), ("data.val_file", self._val)):
            missing = [p.id for p in problems if not isinstance(p.extra.get(self.completion_field), str)]
            if missing:
                raise DataError(f"data.completion_field: {len(missing)} problems of {key} have no text field "
                                f"{self.completion_field!r}, e.g. id {missing[0]!r}")

    def collate_fn(self):
        return partial(collate_sft, field=self.completion_field)

    def train_sampler(self) -> EpochShuffle:
        """Seeded order with batches of similar length (characters, a proxy for tokens): less padding."""
        lengths = [len(p.problem) + len(p.extra[self.completion_field]) for p in self.train_problems]
        return EpochShuffle(len(lengths), self.seed, lengths=lengths, batch_size=self.problems_per_step,
                            **self.shard())


class SFTModule(pl.LightningModule):
    """Next-token cross-entropy on reference completions.

    Args:
        policy: which model to load (the same settings GRPO uses).
        full_finetune: train every weight (no LoRA); what a random-init model needs.
        prompt: how a problem becomes prompt text; default the paper's plain template.
        optim: AdamW + warmup/cosine schedule over ``trainer.max_steps``.
        budget_fraction: share of prompts that state the completion's real length with the
            stage-2 budget sentence (0 = never).
        seed: seeds which prompts get a budget (step by step, so a resumed run matches).
    """

    def __init__(self, policy: PolicyConfig = PolicyConfig(), full_finetune: bool = False,
                 prompt: PromptTemplate | None = None, optim: OptimConfig = OptimConfig(),
                 budget_fraction: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= budget_fraction <= 1.0:
            raise ValueError(f"model.budget_fraction must be in [0, 1], got {budget_fraction}")
        self.policy_config, self.full_finetune = policy, full_finetune
        self.prompt = prompt or PlainPrompt()
        self.optim, self.budget_fraction, self.seed = optim, budget_fraction, seed
        self.policy = None  # built in configure_model so configs instantiate without weights
        self.tokenizer = None

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        if self.full_finetune:
            self.tokenizer, self.policy = load_tokenizer(self.policy_config), load_base_model(self.policy_config, device)
        else:
            self.policy, self.tokenizer = load_policy(self.policy_config, device)
        self.policy.train()

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        opt, sched = self.optim.build([p for p in self.parameters() if p.requires_grad], steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def encode(self, batch: SFTBatch) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` and ``labels`` (-100 on prompt and padding)."""
        tok = self.tokenizer
        completions = [ids + [tok.eos_token_id] for ids in tok(batch.completions, add_special_tokens=False)["input_ids"]]
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.global_step)
        with_budget = (torch.rand(len(batch), generator=generator) < self.budget_fraction).tolist()
        prompts = [self.prompt.render(problem, len(ids) if budget else None, tok)
                   for problem, ids, budget in zip(batch.problems, completions, with_budget)]
        rows = [(p, c) for p, c in zip(tok(prompts, add_special_tokens=False)["input_ids"], completions)]
        width = max(len(p) + len(c) for p, c in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)  # [B, T]
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            input_ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p): len(p) + len(c)] = torch.tensor(c)
            attention_mask[i, : len(p) + len(c)] = 1
        return {k: v.to(self.device) for k, v in
                dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels).items()}

    def loss(self, batch: SFTBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over completion tokens, and the share of them predicted exactly."""
        enc = self.encode(batch)
        logits = self.policy(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, :-1]
        targets = enc["labels"][:, 1:]  # position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                                 ignore_index=-100)
        mask = targets != -100
        return loss, (logits.argmax(-1)[mask] == targets[mask]).float().mean()

    def training_step(self, batch: SFTBatch, batch_idx: int) -> torch.Tensor:
        loss, token_acc = self.loss(batch)
        self.log("loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("token_acc", token_acc, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: SFTBatch, batch_idx: int) -> None:
        loss, token_acc = self.loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("val/token_acc", token_acc, batch_size=len(batch))
