"""Which models to evaluate, start-up checks on them, and loading one for generation.

Flow: ``run_evaluation`` calls :func:`check_models` for every :class:`ModelSpec` before any
weights load (so a typo in the third model fails in seconds, not after hours on the first);
``EvalModule.configure_model`` then calls :func:`load_for_eval` for one model at a time.
Loading goes through :mod:`lapo_lightning.policy` (the only module that imports peft and
bitsandbytes), so a model evaluates with exactly the tokenizer, dtype and 4-bit settings
training used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lapo_lightning.models.adapter_files import adapter_mismatch, safetensors_problem
from lapo_lightning.policy import (DType, PolicyConfig, is_adapter_dir, load_base_model, load_policy, load_tokenizer,
                                   recorded_base)
from lapo_lightning.models.source import GGUF_PREFIX, TINY_PREFIX, resolve as resolve_model
from lapo_lightning.prompts import PlainPrompt, PromptTemplate, load_prompt, prompt_record


class EvalError(ValueError):
    """Bad evaluation input (models, benchmarks, report folder); the message names the key or file."""


@dataclass
class ModelSpec:
    """One model to evaluate: a base, optionally with a LoRA adapter from any stage.

    Args:
        name: row label in the report and key in the records (unique within a run).
        model: hub id, local folder, or ``tiny:<arch>`` (built offline).
        adapter: a saved PEFT adapter folder (e.g. ``runs/stage2/adapter``); None = the base alone.
        tokenizer: tokenizer hub id or folder; defaults to ``model``.
        dtype: dtype of the (non-quantized) weights.
        load_in_4bit: load the base in 4-bit NF4 (as QLoRA training did).
        trust_remote_code: run code shipped with a hub model; off by default (never needed by
            models transformers supports natively).
    """

    name: str
    model: str
    adapter: str | None = None
    tokenizer: str | None = None
    dtype: DType = "float32"
    load_in_4bit: bool = False
    trust_remote_code: bool = False

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(model=self.model, tokenizer=self.tokenizer, dtype=self.dtype,
                            load_in_4bit=self.load_in_4bit, adapter=self.adapter,
                            trust_remote_code=self.trust_remote_code)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2])[:400] if lines else type(error).__name__


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def check_models(models: list[ModelSpec]) -> list[str]:
    """Every problem with the model list, as messages (empty = fine); loads configs only."""
    if not models:
        return ["model.models is empty: name at least one model to evaluate"]
    from transformers import AutoConfig

    errors = []
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        errors.append(f"model.models: names must be unique, got {names}")
    for i, spec in enumerate(models):
        key = f"model.models[{i}] ({spec.name})"
        adapter_ok = spec.adapter is not None and is_adapter_dir(spec.adapter)
        if spec.adapter is not None and not adapter_ok:
            errors.append(f"{key}.adapter: no PEFT adapter at {spec.adapter} (expected adapter_config.json there)")
        elif adapter_ok and (problem := adapter_weights_problem(spec.adapter)):
            errors.append(f"{key}.adapter: {problem}")
            adapter_ok = False
        if _looks_local(spec.model) and not Path(spec.model).expanduser().is_dir():
            errors.append(f"{key}.model: no model folder at {spec.model}")
            continue
        try:
            config = AutoConfig.from_pretrained(resolve_model(spec.model), trust_remote_code=spec.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - hub, cache and parse errors all mean "cannot load"
            where = ("a local folder" if _looks_local(spec.model) else
                     "a tiny model spec" if spec.model.startswith(TINY_PREFIX) else
                     "a GGUF model spec" if spec.model.startswith(GGUF_PREFIX) else
                     "not a local folder, so a Hugging Face hub id; offline, only its cache is searched")
            errors.append(f"{key}.model: cannot load {spec.model!r} ({where}): {_first_line(e)}")
            continue
        if adapter_ok:
            if problem := adapter_mismatch(spec.adapter, config):
                errors.append(f"{key}: the adapter {spec.adapter} does not fit the base model {spec.model} "
                              f"(adapter_config.json names base {recorded_base(spec.adapter)!r}): {problem}")
    return errors


def adapter_weights_problem(adapter: str) -> str | None:
    """Why an adapter's ``adapter_model.safetensors`` cannot be read (corrupt or truncated),
    naming the file, else None (a readable file, or an old ``.bin`` adapter)."""
    weights = Path(adapter) / "adapter_model.safetensors"
    if weights.is_file() and (problem := safetensors_problem(weights)):
        return f"{weights} {problem}; re-export the adapter (or restore it from a checkpoint)"
    return None


def evaluation_prompt(models: list[ModelSpec], prompt: PromptTemplate | None) -> tuple[PromptTemplate, list[str]]:
    """The one prompt all models are evaluated with, and the problems choosing it (as messages).

    ``prompt`` given: it is used, and an adapter that recorded another one at export is named
    in a warning. Not given: the prompt the adapters recorded (``lapo_prompt.json``), the
    same for the base models so the comparison is fair; adapters that recorded different
    prompts are an error (set ``model.prompt``); no record at all: the paper's plain prompt.
    """
    recorded = {}
    for i, spec in enumerate(models):
        if spec.adapter is None:
            continue
        try:
            found = load_prompt(spec.adapter)
        except (OSError, ValueError, TypeError, KeyError) as e:
            return prompt or PlainPrompt(), [f"model.models[{i}] ({spec.name}).adapter: cannot read its recorded "
                                             f"prompt: {_first_line(e)}; set model.prompt"]
        if found is not None:
            recorded[spec.name] = found
    if prompt is not None:
        others = [name for name, p in recorded.items() if prompt_record(p) != prompt_record(prompt)]
        if others:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"model.prompt differs from the prompt recorded at export by {', '.join(others)}: "
                           f"every model is evaluated with model.prompt ({type(prompt).__name__})")
        return prompt, []
    kinds = {json.dumps(prompt_record(p), sort_keys=True): p for p in recorded.values()}
    if len(kinds) > 1:
        named = ", ".join(f"{name}: {type(p).__name__}" for name, p in recorded.items())
        return PlainPrompt(), [f"model.prompt: the adapters were trained with different prompts ({named}); "
                               f"set model.prompt to the one to compare them with"]
    return next(iter(kinds.values()), None) or PlainPrompt(), []


def load_for_eval(spec: ModelSpec, index: int, device: torch.device | str | None = None, merge_adapter: bool = True):
    """``(model, tokenizer)`` in eval mode with no gradients; the adapter merged when exact.

    A 4-bit base cannot absorb LoRA weights exactly, so a 4-bit model keeps the adapter
    separate. Raises :class:`EvalError` naming both paths when the adapter does not fit.
    """
    cfg = spec.policy_config()
    key = f"model.models[{index}] ({spec.name})"
    try:
        if spec.adapter is None:
            tokenizer, model = load_tokenizer(cfg), load_base_model(cfg, device)
        else:
            model, tokenizer = load_policy(cfg, device)
            if merge_adapter and not spec.load_in_4bit:
                model = model.merge_and_unload()  # plain weights: no LoRA matmuls in every decode step
    except (RuntimeError, ValueError, KeyError) as e:
        if spec.adapter is None:
            raise EvalError(f"{key}.model: cannot load {spec.model!r}: {_first_line(e)}") from None
        recorded = recorded_base(spec.adapter)
        raise EvalError(
            f"{key}: the adapter {spec.adapter} does not fit the base model {spec.model} "
            f"(adapter_config.json names base {recorded!r}): {_first_line(e)}"
        ) from None
    except OSError as e:
        raise EvalError(f"{key}.model: cannot load {spec.model!r}: {_first_line(e)}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    return model, tokenizer
