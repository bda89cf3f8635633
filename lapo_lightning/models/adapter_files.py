"""Checks of a saved LoRA adapter's files that read no tensor data: can its safetensors be
read, and do its shapes fit a base model.

Below both users: ``lapo fit``'s start-up check (:mod:`lapo_lightning.safety.preflight`) and the
evaluation's model loading (:mod:`lapo_lightning.evaluation.models`).
"""

from __future__ import annotations

from pathlib import Path

import torch


def safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot be read (a corrupt or truncated header), else None.
    Reads the header and each tensor's shape only: no tensor data."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                f.get_slice(name).get_shape()
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError and OSError
        return f"is not a readable safetensors file ({first_line(e)})"
    return None


def adapter_mismatch(adapter: str, config) -> str | None:
    """Why a LoRA adapter cannot load onto a model with ``config`` (None = it fits or can't tell).

    Compares the saved ``lora_A`` [r, in] / ``lora_B`` [out, r] shapes with the base layers
    [out, in] of the architecture built on the meta device: no weights are read or allocated.
    """
    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        return None  # an old .bin adapter: peft's own error at load time names the mismatch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config)
    with safe_open(str(weights), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    for name, shape in shapes.items():
        parts = name.removeprefix("base_model.model.").split(".")
        if parts[-2:] not in (["lora_A", "weight"], ["lora_B", "weight"]):
            continue
        module = ".".join(parts[:-2])
        try:
            out_features, in_features = base.get_submodule(module).weight.shape[:2]
        except AttributeError:
            return f"layer {module} of the adapter is not in the base model"
        fits = shape[1] == in_features if parts[-2] == "lora_A" else shape[0] == out_features
        if not fits:
            return f"{name} has shape {list(shape)}, the base layer {module} is [{out_features}, {in_features}]"
    return None


def first_line(error: BaseException) -> str:
    """An error's first non-empty line, at most 300 characters (its type when it has none)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(error).__name__
