"""The GRPO LightningModule that both LAPO stages run.

Flow: ``LapoDataModule`` yields a ``ProblemBatch``; callbacks may set its budgets;
``training_step`` then samples G completions per problem, verifies them, scores them
with the configured reward plugins, turns rewards into group advantages and runs the
inner PPO-style updates; it returns a ``StepSummary`` for the callbacks. Stage 1 and
stage 2 differ only in the rewards, reference, prompt and callbacks that YAML plugs in.

Manual optimization: one batch is one generation, sampled at once, and gives
``num_iterations x steps_per_generation`` optimizer steps (each pass over the rollouts is
shuffled into ``steps_per_generation`` mini-batches), each accumulating gradients over
micro-batches, so ``trainer.global_step`` (and ``trainer.max_steps``) count optimizer steps,
not batches. An optimizer step whose loss or
gradient holds NaN/inf is skipped (counted as ``train/skipped_nonfinite``) and a run of
``max_nonfinite_steps`` of them stops training (``lapo_lightning/safety/health.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import lightning.pytorch as pl
import torch
from torch import Tensor

from lapo_lightning.safety import run_identity
from lapo_lightning.safety.checkpointing import unaligned_checkpoint_warning
from lapo_lightning.algo import generation_mini_batches, group_advantages, grpo_loss, problem_seed, ratio_summary
from lapo_lightning.config import GRPOConfig, OptimConfig, kl_reference_problem
from lapo_lightning.safety.memory_check import check_before_loading
from lapo_lightning.fast_rollout import CompactDecode
from lapo_lightning.safety.health import (NonFiniteGuard, NonFiniteTrainingError, NonFiniteWeightsError, group_health,
                                   newest_checkpoint, nonfinite_parameters, nonfinite_sampling_message,
                                   nonfinite_weights_message)
from lapo_lightning.policy import PolicyConfig, load_policy
from lapo_lightning.prompts import PlainPrompt, PromptTemplate, opens_think
from lapo_lightning.reference import AdapterDisabled, NoReference, Reference
from lapo_lightning.rewards import Accuracy, Reward, score
from lapo_lightning.rollout import GenerationConfig, Sampler
from lapo_lightning.rollout_logprobs import micro_batch_rows, rollout_logprobs
from lapo_lightning.step_metrics import step_metrics
from lapo_lightning.tiled_mlp import tile_mlps
from lapo_lightning.types import ProblemBatch, RolloutBatch, StepSummary
from lapo_lightning.verify import MathVerifier, Verifier

LOSS_KEYS = ("loss/policy", "loss/kl", "train/clip_frac", "loss/total")
"""Loss terms logged per training batch, averaged over its optimizer steps."""


class GRPOModule(NonFiniteGuard, pl.LightningModule):
    """GRPO on a LoRA policy, with pluggable rewards, reference, prompt and sampler.

    Args:
        policy: which model to load and how (4-bit, LoRA, dtype).
        rewards: reward plugins; default ``[Accuracy()]``.
        grpo: group size, clipping, KL, inner epochs, micro-batching, aggregation.
        generation: sampling settings for rollouts.
        optim: AdamW + warmup/cosine schedule.
        reference: KL reference; default ``AdapterDisabled`` (``NoReference`` when kl_coef is 0).
        prompt: how a problem (and its budget) becomes prompt text; default the paper's plain template.
        sampler: rollout engine; default ``CompactDecode`` (drops finished rows), or
            ``HFGenerate`` (plain batched ``generate``, the simple reference path).
        verifier: answer checker; default math-verify with a timeout.
        seed: rollouts of optimizer step k on rank r are sampled with a seed derived from
            (seed, k, r), so a resumed run samples exactly what an uninterrupted one would.
        max_nonfinite_steps: stop training with an error after this many optimizer steps in a
            row had a NaN/inf loss or gradient. Each such step is skipped (the weights are not
            updated; see :meth:`skip_nonfinite_step`) and counted as ``train/skipped_nonfinite``;
            one isolated bad step is survivable, a run of them means training is broken.
    """

    def __init__(
        self,
        policy: PolicyConfig = PolicyConfig(),
        rewards: list[Reward] | None = None,
        grpo: GRPOConfig = GRPOConfig(),
        generation: GenerationConfig = GenerationConfig(),
        optim: OptimConfig = OptimConfig(),
        reference: Reference | None = None,
        prompt: PromptTemplate | None = None,
        sampler: Sampler | None = None,
        verifier: Verifier | None = None,
        seed: int = 0,
        max_nonfinite_steps: int = 3,
    ) -> None:
        super().__init__()
        if max_nonfinite_steps < 1:
            raise ValueError(f"model.max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable (LoRA) tensors
        # The dataclass defaults above are never mutated, so sharing them is safe.
        self.policy_config = policy
        self.rewards = rewards if rewards is not None else [Accuracy()]
        self.grpo, self.generation, self.optim = grpo, generation, optim
        if reference is None:
            reference = AdapterDisabled() if self.grpo.kl_coef > 0 else NoReference()
        if (problem := kl_reference_problem(self.grpo.kl_coef, reference.needs_forward)) is not None:
            raise ValueError(problem)
        self.reference = reference
        self.prompt = prompt or PlainPrompt()
        self.sampler = sampler or CompactDecode()
        self.verifier = verifier or MathVerifier()
        self.seed = seed
        self.max_nonfinite_steps = max_nonfinite_steps
        self.reset_nonfinite_counts()
        self.policy = None  # built in configure_model so configs instantiate without weights
        self.tokenizer = None

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Start-up checks that need the data module, before any weights are loaded."""
        self.policy_config.check_paths()
        self.reference.check_paths()
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "steps_per_generation"):  # each batch: k optimizer steps' worth of problems
            datamodule.steps_per_generation = self.grpo.steps_per_generation
        per_step = getattr(datamodule, "problems_per_step", None)
        micro = self.grpo.micro_batch_size
        if per_step is not None and isinstance(micro, int) and (per_step * self.grpo.group_size) % micro:
            raise ValueError(
                f"model.grpo.micro_batch_size={micro} must divide the rollout batch "
                f"data.problems_per_step * model.grpo.group_size = {per_step} * {self.grpo.group_size}"
            )
        if self._trainer is not None:
            unaligned_checkpoint_warning(self.trainer.checkpoint_callbacks, self.grpo.updates_per_batch)
        if stage == "fit" and per_step is not None:
            # Prints the memory estimate, refuses what cannot fit, and turns `auto` sizes into numbers.
            check_before_loading(self, datamodule)

    def configure_model(self) -> None:
        if self.policy is not None:  # Lightning may call this more than once
            return
        self.policy, self.tokenizer = load_policy(self.policy_config, device=self.trainer.strategy.root_device
                                                  if self._trainer is not None else None)
        self.reference.setup(self.policy)
        tile_mlps(self.policy, self.grpo.mlp_chunk_tokens)  # MLP intermediates one chunk at a time in training
        self.policy.train()  # from_pretrained returns eval mode; sampling switches to eval itself

    def configure_optimizers(self):
        opt, sched = self.optim.build([p for p in self.parameters() if p.requires_grad], self._total_optimizer_steps())
        return [opt], [sched]

    def _total_optimizer_steps(self) -> int:
        # estimated_stepping_batches counts batches (capped by max_steps); each batch makes
        # num_iterations x steps_per_generation optimizer steps, and max_steps counts optimizer steps.
        batches = self.trainer.estimated_stepping_batches
        total = batches * self.grpo.updates_per_batch
        return int(min(total, self.trainer.max_steps) if self.trainer.max_steps > 0 else total)

    # -------------------------------------------------------------- training
    def training_step(self, batch: ProblemBatch, batch_idx: int) -> dict:
        start = time.perf_counter()
        rollouts = self.sample(batch, self.grpo.group_size, self.generation)  # N = B*G
        gen_seconds = time.perf_counter() - start
        rollouts = self.verify(rollouts)  # correct[N]
        rewards = score(self.rewards, rollouts)  # name -> [N]
        advantages = group_advantages(rewards["total"], rollouts.group_index, len(batch), eps=self.grpo.adv_eps)
        step = self.global_step
        losses = self.update(rollouts, advantages)  # num_iterations x steps_per_generation optimizer steps
        summary = StepSummary(
            step=step,
            problem_ids=list(batch.problem_ids),
            group_index=rollouts.group_index.cpu(),
            lengths=rollouts.lengths.cpu(),
            correct=rollouts.correct.cpu(),
            truncated=rollouts.truncated.cpu(),
            budgets=rollouts.budgets,
            targets=rollouts.targets,
            rewards={name: value.detach().cpu() for name, value in rewards.items()},
            texts=rollouts.texts,
        )
        self.log_step(summary, rollouts, losses, gen_seconds, time.perf_counter() - start)
        return {"summary": summary}

    @torch.no_grad()
    def sample(self, batch: ProblemBatch, group_size: int, gen: GenerationConfig) -> RolloutBatch:
        prompts = [self.prompt.render(p, b, self.tokenizer) for p, b in zip(batch.problems, batch.budgets)]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # leave the global RNG stream untouched
            torch.manual_seed(self.seed + 1_000_003 * self.global_step + 10_007 * self.global_rank)
            try:
                return self.sampler.sample(self.policy, self.tokenizer, prompts, batch, group_size, gen)
            except RuntimeError as err:  # torch.multinomial on NaN/inf probabilities
                if "probability tensor contains" not in str(err):
                    raise
                bad = nonfinite_parameters((n, p) for n, p in self.named_parameters() if p.requires_grad)
                checkpoint = newest_checkpoint(self.trainer) if self._trainer is not None else None
                raise NonFiniteTrainingError(nonfinite_sampling_message(
                    self.global_step, self.policy_config.dtype, self.device.type, bad, checkpoint)) from err

    def verify(self, rollouts: RolloutBatch) -> RolloutBatch:
        problems, owner = rollouts.problems, rollouts.group_index.tolist()  # owner: [N] index into problems
        # Whether the prompt left <think> open decides which part of a completion is graded.
        # The B prompts are rendered again (string work) rather than carried through every sampler.
        opened = [opens_think(self.prompt.render(p, b, self.tokenizer))
                  for p, b in zip(problems.problems, problems.budgets)]  # [B]
        result = self.verifier(rollouts.texts, [problems.answers[i] for i in owner], [opened[i] for i in owner])
        device = rollouts.completion_ids.device
        return replace(rollouts, correct=result.correct.to(device), parsed=result.parsed.to(device),
                       unclosed=result.unclosed.to(device))

    def update(self, rollouts: RolloutBatch, advantages: Tensor) -> dict[str, float]:
        """The optimizer steps of one generation: ``num_iterations`` passes over its rollouts,
        each split into ``steps_per_generation`` mini-batches of one step each, stratified by
        group (:func:`~lapo_lightning.algo.generation_mini_batches`), micro-batched. Returns the loss
        terms averaged over the steps; each step's importance ratio goes to ``update/*``."""
        opt, sched = self.optimizers(), self.lr_schedulers()
        if self.nothing_to_learn(advantages):
            return self.step_on_zero_gradients(opt, sched)
        ref_logprobs = self.logprobs_no_grad(rollouts, reference=True) if self.grpo.kl_coef > 0 else None
        # Old log-probs, fixed for the whole generation: the sampler's own (CompactDecode
        # returns them), else one extra pass when there is more than one step. With one step
        # and none given they equal the current ones, so grpo_loss uses those detached (ratio 1)
        # and no forward is spent on them.
        steps = self.grpo.updates_per_batch
        old_logprobs = rollouts.old_logprobs
        if old_logprobs is None and steps > 1:
            old_logprobs = self.logprobs_no_grad(rollouts)
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        skipped, first_step = 0, self.global_step
        for epoch in range(self.grpo.num_iterations):
            seeds = [problem_seed(self.seed, first_step, epoch, pid) for pid in rollouts.problems.problem_ids]
            for rows in generation_mini_batches(rollouts.group_index, seeds, self.grpo.steps_per_generation):
                losses, ratios, loss_finite = self.backward_mini_batch(rollouts, rows, advantages, old_logprobs,
                                                                       ref_logprobs)
                for key in LOSS_KEYS:
                    sums[key] += losses[key] / steps
                if not self.gradients_finite(opt, loss_finite):
                    self.skip_nonfinite_step(opt, sched)
                    skipped += 1
                    continue
                self.note_finite_step()
                if self.grpo.max_grad_norm is not None:
                    self.clip_gradients(opt, gradient_clip_val=self.grpo.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                self.log_update(ratios, losses)
        sums["train/skipped_zero_advantage"] = 0.0
        return sums | self.nonfinite_metrics(skipped)

    def backward_mini_batch(self, rollouts: RolloutBatch, rows: Tensor, advantages: Tensor,
                            old_logprobs: Tensor | None, ref_logprobs: Tensor | None
                            ) -> tuple[dict[str, float], Tensor, bool]:
        """Gradients of one optimizer step's loss over ``rows``, accumulated micro-batch by
        micro-batch. Returns its loss terms, its importance-ratio sums and whether every
        micro-batch's loss was finite."""
        totals = self.step_totals(rollouts, rows)
        losses, ratios, finite = dict.fromkeys(LOSS_KEYS, 0.0), torch.zeros(4, dtype=torch.float64), True
        for idx in self.micro_batches(rollouts, rows):
            terms = grpo_loss(
                self.completion_logprobs(rollouts, idx),  # [n, T]
                None if old_logprobs is None else old_logprobs[idx],
                None if ref_logprobs is None else ref_logprobs[idx],
                advantages[idx],
                rollouts.completion_mask[idx],
                clip_low=self.grpo.clip_low,
                clip_high=self.grpo.clip_high,
                kl_coef=self.grpo.kl_coef,
                aggregation=self.grpo.token_aggregation,
                **totals,
            )
            self.manual_backward(terms.loss)
            for key, value in zip(LOSS_KEYS, (terms.policy_loss, terms.kl, terms.clip_frac, terms.loss)):
                losses[key] += float(value.detach())
            ratios += terms.ratio_sums.cpu()
            finite = finite and math.isfinite(float(terms.loss.detach()))
        return losses, ratios, finite

    def log_update(self, ratios: Tensor, losses: dict[str, float]) -> None:
        """One optimizer step's importance ratio (mean, spread over tokens, clipped share, summed
        over processes) and loss, to the loggers at that step's ``global_step``: ``update/*``.
        With one step per generation the ratio is exactly 1 and nothing is clipped; from a
        generation's second step on it shows how far the policy has moved."""
        if self._trainer is None or not self.trainer.loggers:
            return
        if self.trainer.world_size > 1:
            ratios = self.trainer.strategy.reduce(ratios.to(self.device), reduce_op="sum").cpu()
        metrics = {f"update/{key}": value for key, value in ratio_summary(ratios).items()}
        metrics["update/loss"] = losses["loss/total"]
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def nothing_to_learn(self, advantages: Tensor) -> bool:
        """True when the step's loss has a zero gradient for certain: every advantage is exactly
        0 (every group's rewards were equal) and the KL term is off (``model.grpo.kl_coef`` 0).

        With KL on the pass always runs: the KL gradient is not zero once the policy has
        drifted from the reference, and it needs the same forward and backward as the policy
        term, so dropping only the (zero) policy term would save nothing. Decided over all
        processes: one process skipping its backward while another runs one would hang DDP's
        gradient all-reduce.
        """
        if self.grpo.kl_coef > 0:
            return False
        busy = torch.tensor([float(bool(advantages.ne(0).any()))], device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            busy = self.trainer.strategy.reduce(busy, reduce_op="sum")
        return float(busy.item()) == 0.0

    def step_on_zero_gradients(self, opt, sched) -> dict[str, float]:
        """``update`` without the forward/backward, for a step with nothing to learn.

        Every gradient the full pass would compute is exactly 0 (the surrogate is ratio x 0), so
        the optimizer still steps, on zero gradients: AdamW then moves the weights by its
        momentum (and decays them when weight_decay > 0) exactly as the full pass would, so the
        skip saves time and never changes the trained weights. Stepping also keeps the LR
        schedule, ``trainer.global_step`` (``max_steps``, rollout seeds, checkpoints) aligned
        with a run that did the pass. Gradient clipping is a no-op on zero gradients.
        """
        params = [p for group in opt.param_groups for p in group["params"] if p.requires_grad]
        for _ in range(self.grpo.updates_per_batch):
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        self.note_finite_step()  # zero gradients are finite
        return {"loss/policy": 0.0, "loss/kl": 0.0, "train/clip_frac": 0.0, "loss/total": 0.0,
                "train/skipped_zero_advantage": float(self.grpo.updates_per_batch)} | self.nonfinite_metrics(0)

    def step_totals(self, rollouts: RolloutBatch, rows: Tensor) -> dict[str, float]:
        """The loss normalisers: one optimizer step's (``rows``') token and sequence counts, over every process.

        Strategies (DDP, FSDP, DeepSpeed) average gradients over the W processes, so each
        process divides its sums by totals / W: the average is then the gradient of one
        process holding the whole step, whatever the split (a process dividing by its own
        token count would weigh the tokens of a short-answer process more).
        Example: two processes with 300 and 100 tokens -> total_tokens 200 on each.
        """
        counts = torch.tensor([rollouts.completion_mask[rows].sum().item(), len(rows)], dtype=torch.float64,
                              device=self.device)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        tokens, sequences = (counts.clamp(min=1) / world).tolist()  # an all-empty step must not divide by 0
        return dict(total_tokens=tokens, total_sequences=sequences,
                    max_tokens=self.generation.max_new_tokens)

    def micro_batches(self, rollouts: RolloutBatch, rows: Tensor | None = None) -> list[Tensor]:
        """Index tensors of ``micro_batch_size`` rollouts of ``rows`` (default: all), bucketed by
        length (:func:`~lapo_lightning.rollout_logprobs.micro_batch_rows`)."""
        return micro_batch_rows(rollouts, rows, self.grpo.micro_batch_size, self.grpo.shared_prefix, self.policy)

    def completion_logprobs(self, rollouts: RolloutBatch, idx: Tensor) -> Tensor:
        """[n, T] log-probs of the sampled completion tokens under the current weights (0 on padding)."""
        temperature = self.generation.temperature if self.generation.temperature > 0 else 1.0
        return rollout_logprobs(self.policy, rollouts, idx, temperature, self.grpo.logprob_chunk_tokens,
                                self.grpo.shared_prefix)

    @torch.no_grad()
    def logprobs_no_grad(self, rollouts: RolloutBatch, reference: bool = False) -> Tensor:
        """[N, T] log-probs under the policy (or, with ``reference``, the reference weights)."""
        def run() -> Tensor:
            out = torch.zeros(rollouts.completion_ids.shape, device=self.device)  # [N, T]
            for idx in self.micro_batches(rollouts):
                out[idx] = self.completion_logprobs(rollouts, idx)
            return out

        if not reference:
            return run()
        with self.reference.active(self.policy):
            return run()

    # ------------------------------------------------------------ validation
    def validation_step(self, batch: ProblemBatch, batch_idx: int) -> None:
        """Greedy answer per problem: held-out accuracy and length without any budget."""
        greedy = replace(self.generation, temperature=0.0)
        plain = replace(batch, budgets=[None] * len(batch), targets=[None] * len(batch))
        rollouts = self.verify(self.sample(plain, 1, greedy))
        n = len(rollouts)
        self.log("val/accuracy", rollouts.correct.float().mean(), batch_size=n, sync_dist=True, prog_bar=True)
        self.log("val/length", rollouts.lengths.float().mean(), batch_size=n, sync_dist=True)
        self.log("val/truncation_rate", rollouts.truncated.float().mean(), batch_size=n, sync_dist=True)

    # --------------------------------------------------------------- logging
    def log_step(self, summary: StepSummary, rollouts: RolloutBatch, losses: dict[str, float],
                 gen_seconds: float, step_seconds: float) -> None:
        metrics = step_metrics(summary, rollouts, losses, gen_seconds=gen_seconds, step_seconds=step_seconds,
                               passes=self.grpo.num_iterations, lr=self.lr_schedulers().get_last_lr()[0])
        self.log_dict(metrics, batch_size=len(rollouts), sync_dist=True)
        # Groups with no learning signal this step, counted (summed over processes): all
        # truncated, all wrong, all correct, all rewards equal (advantage 0 for every row).
        groups = group_health(summary.correct, summary.truncated, summary.rewards["total"], summary.group_index,
                              len(summary.problem_ids))
        groups["total"] = len(summary.problem_ids)
        self.log_dict({f"groups/{k}": float(v) for k, v in groups.items()}, batch_size=len(rollouts),
                      sync_dist=True, reduce_fx="sum")
        self.log("acc", metrics["accuracy"], prog_bar=True, logger=False, batch_size=len(rollouts))
        self.log("len", metrics["length/mean"], prog_bar=True, logger=False, batch_size=len(rollouts))

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable tensors: a 4-bit (or any) base model is never written. Refuse
        (:class:`NonFiniteWeightsError`, nothing written) when one of them holds NaN/inf."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        bad = nonfinite_parameters(checkpoint["state_dict"].items())
        if bad:
            step = checkpoint.get("global_step", self.global_step)
            raise NonFiniteWeightsError(nonfinite_weights_message(bad, f"checkpoint at step {step}"))
        checkpoint["numerical_health"] = self.nonfinite_counts()
        # Which run wrote it (model, LoRA, stage), so a resume under another config is refused.
        checkpoint[run_identity.KEY] = run_identity.of_module(self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        run_identity.refuse_foreign(self, checkpoint)
        self.restore_numerical_health(checkpoint)
