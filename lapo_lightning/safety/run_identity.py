"""What makes a checkpoint belong to a run: recorded when saving, compared when resuming.

``GRPOModule.on_save_checkpoint`` stores :func:`identity` under ``checkpoint["lapo_run"]``: the
base model, its dtype and 4-bit loading, the LoRA settings (read from the starting adapter when
there is one), the reward classes, whether stage-2 budgets (``BudgetTargets``) are on, what a
step means (G, problems per step, the generation cap) and a fingerprint of the training
problems (ids, text and answers). A
resume compares it with the current config twice: before any weights load
(``checkpointing.prepare_fit``) and in ``GRPOModule.on_load_checkpoint``, which also compares the
saved adapter tensors' shapes with the model's. Any difference refuses the resume with one line
per difference, naming the config key, instead of loading nothing (non-strict loading) or
failing with a raw size-mismatch dump.
"""

from __future__ import annotations

import json
from pathlib import Path

KEY = "lapo_run"
# identity field -> the config key a user changes to make it differ
FIELDS = {
    "module": "model.class_path",
    "base_model": "model.policy.model",
    "dtype": "model.policy.dtype",
    "load_in_4bit": "model.policy.load_in_4bit",
    "lora_r": "model.policy.lora.r (or the adapter's r)",
    "lora_alpha": "model.policy.lora.alpha (or the adapter's lora_alpha)",
    "lora_target_modules": "model.policy.lora.target_modules (or the adapter's)",
    "rewards": "model.rewards",
    "budget_targets": "trainer.callbacks (BudgetTargets)",
    "group_size": "model.grpo.group_size",
    "problems_per_step": "data.problems_per_step",
    "steps_per_generation": "model.grpo.steps_per_generation",
    "max_new_tokens": "model.generation.max_new_tokens",
    "data": "data.train_file (its problems' ids, text and answers)",
}
# What changes the meaning of a step or the data but not the tensors: a user who really means to
# continue under new values may (ALLOW_ENV=1); a different model or adapter shape cannot load at all.
OVERRIDABLE = ("group_size", "problems_per_step", "steps_per_generation", "max_new_tokens", "data")
ALLOW_ENV = "LAPO_ALLOW_RESUME_CHANGES"


class CheckpointMismatchError(ValueError):
    """A checkpoint saved by another run (other model, adapter shape or stage)."""


def _lora(policy) -> dict:
    """r, alpha and target modules: the starting adapter's own when there is one (its settings apply)."""
    lora = policy.lora
    settings = {"lora_r": lora.r, "lora_alpha": lora.alpha, "lora_target_modules": lora.target_modules}
    if getattr(policy, "adapter", None):
        try:
            saved = json.loads((Path(policy.adapter) / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return settings
        settings = {"lora_r": saved.get("r"), "lora_alpha": saved.get("lora_alpha"),
                    "lora_target_modules": saved.get("target_modules")}
    targets = settings["lora_target_modules"]
    if isinstance(targets, (list, tuple, set)):
        settings["lora_target_modules"] = sorted(targets)
    return settings


def identity(module, callbacks, datamodule=None) -> dict:
    """The run's identity from a module (``policy_config``, ``rewards``, ``grpo``, ``generation``),
    the trainer's callbacks and the data module (its problems; absent fields are not compared)."""
    policy = module.policy_config
    step = {}
    if getattr(module, "grpo", None) is not None:
        step["group_size"] = module.grpo.group_size
        step["steps_per_generation"] = module.grpo.steps_per_generation
    if getattr(module, "generation", None) is not None:
        step["max_new_tokens"] = module.generation.max_new_tokens
    if datamodule is not None and hasattr(datamodule, "content_fingerprint"):
        step["problems_per_step"] = datamodule.problems_per_step
        step["data"] = datamodule.content_fingerprint
    return {
        "module": type(module).__name__,
        "base_model": policy.model,
        "dtype": policy.dtype,
        "load_in_4bit": bool(policy.load_in_4bit),
        **_lora(policy),
        "rewards": sorted(type(r).__name__ for r in getattr(module, "rewards", [])),
        "budget_targets": any(type(c).__name__ == "BudgetTargets" for c in callbacks),
        **step,
    }


def differences(recorded: dict, current: dict) -> list[str]:
    """One line per field that differs: ``<what> (<config key>): checkpoint X, config Y``.
    Fields either side lacks (a checkpoint of an older lapo) are not compared; with
    ``LAPO_ALLOW_RESUME_CHANGES=1`` the :data:`OVERRIDABLE` ones are not either."""
    import os

    allowed = OVERRIDABLE if os.environ.get(ALLOW_ENV, "") not in ("", "0") else ()
    lines = []
    for field, key in FIELDS.items():
        if field in allowed or field not in current:
            continue
        pair = (recorded.get(field), current.get(field))
        if field == "lora_target_modules" and sum(isinstance(v, str) for v in pair) == 1:
            continue  # "all-linear" against the list a saved adapter expanded it to: the shapes decide
        if field in recorded and recorded[field] != current.get(field):
            lines.append(f"{field.replace('_', ' ')} ({key}): checkpoint {recorded[field]!r}, config {current.get(field)!r}")
    return lines


def shape_differences(saved: dict, model_shapes: dict[str, tuple]) -> list[str]:
    """Saved tensor shapes against the model's trainable ones (names as in the state dict)."""
    lines = []
    unknown = sorted(set(saved) - set(model_shapes))
    for name in sorted(set(saved) & set(model_shapes)):
        if tuple(saved[name]) != tuple(model_shapes[name]):
            lines.append(f"adapter tensor {name}: checkpoint {list(saved[name])}, model {list(model_shapes[name])}")
    if lines:
        lines = lines[:3] + ([f"... and {len(lines) - 3} more tensors of other shapes"] if len(lines) > 3 else [])
    if unknown:
        lines.append(f"{len(unknown)} checkpoint tensors the model does not have, e.g. {unknown[0]}")
    if model_shapes and not set(saved) & set(model_shapes):
        lines.append("the checkpoint holds none of the model's trainable tensors")
    return lines


def refusal(path: str | None, lines: list[str], recorded: dict | None, current: dict) -> CheckpointMismatchError:
    """The error for a mismatched checkpoint; a stage-1 checkpoint under a stage-2 config says what to do."""
    where = f"--ckpt_path {path}" if path else "the checkpoint"
    text = f"{where} was saved by another run; refusing to resume:\n  " + "\n  ".join(lines)
    if recorded is not None and not recorded.get("budget_targets") and current.get("budget_targets"):
        text += ("\n  it is a stage-1 checkpoint and this is a stage-2 config: stage 2 starts from the stage-1 "
                 "adapter (model.policy.adapter, the folder stage 1 exported), not from a stage-1 checkpoint; "
                 "run it without --ckpt_path")
    else:
        text += "\n  resume with the config that wrote it, or start afresh without --ckpt_path"
        if any(line.startswith(tuple(f.replace("_", " ") + " (" for f in OVERRIDABLE)) for line in lines):
            text += (f"; to continue it under the new {', '.join(f.replace('_', ' ') for f in OVERRIDABLE)} "
                     f"anyway, set {ALLOW_ENV}=1")
    return CheckpointMismatchError(text)


def of_module(module) -> dict:
    """The identity of the run a LightningModule is in: its settings, its trainer's callbacks
    and data module (absent without a trainer)."""
    trainer = module._trainer
    return identity(module, trainer.callbacks if trainer else [], getattr(trainer, "datamodule", None) if trainer else None)


def refuse_foreign(module, checkpoint: dict) -> None:
    """Refuse a checkpoint of another run (model, adapter shapes, stage) before anything loads:
    loading is non-strict, so a foreign checkpoint would otherwise load nothing, silently."""
    current = of_module(module)
    recorded = checkpoint.get(KEY)
    lines = differences(recorded, current) if recorded is not None else []
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters() if p.requires_grad}
    saved = {k: tuple(v.shape) for k, v in checkpoint.get("state_dict", {}).items()}
    lines += shape_differences(saved, shapes)
    if lines:
        raise refusal(module.trainer.ckpt_path if module._trainer else None, lines, recorded, current)
