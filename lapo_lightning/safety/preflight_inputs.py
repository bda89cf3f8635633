"""The inputs and context stages of the start-up check: files, model sources, outputs, context.

Where it sits in the flow: after the settings stage (``preflight_settings.py``) has built each
section into a ``Built``, :func:`check_inputs` reads what they name without loading weights: the
data files (every bad line), the model name (a missing folder, a hub id not cached while
offline), adapters (folder, ``adapter_config.json``, a readable safetensors header, shapes that
fit the base), stage-2 length tables, every output location's writability, and, once the
model's config and tokenizer are read, that every prompt plus the generation cap fits the
model's context.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from lapo_lightning.models.adapter_files import adapter_mismatch, first_line, safetensors_problem
from lapo_lightning.safety.preflight_settings import Built

MAX_LINES_PER_CHECK = 20  # e.g. prompts over the context: the first ones, then a count


def check_inputs(cfg: Namespace, built: Built, skip: tuple[str, ...] = (), context: bool = True) -> list[str]:
    """The inputs' problems, one line each, in the order a person fixes them: data, outputs,
    model sources, length tables, then the context (only when the model's sources are fine and
    ``context`` holds). Lines starting with a key in ``skip`` (e.g. ``"model.policy.adapter:"``,
    a file an earlier stage writes) are left out."""
    data_problems = check_data(built)
    problems = data_problems + check_outputs(cfg, built)
    model_problems = [p for p in check_model_sources(built) if not p.startswith(skip)]
    problems += model_problems + [p for p in check_tables(built) if not p.startswith(skip)]
    if not model_problems and context:
        problems += check_model_fit(built, with_prompts=not data_problems)
    return problems


def check_data(built: Built) -> list[str]:
    """Every problem in the data files, through the data module's own loading (file:line each)."""
    from lapo_lightning.data import LapoDataModule
    from lapo_lightning.problem_sets.files import DataError

    data = built.get("data")
    if not isinstance(data, LapoDataModule):
        return []
    try:
        data.setup("fit")
    except DataError as e:
        return list(e.problems)
    return []


def check_model_sources(built: Built) -> list[str]:
    """The policy's model and tokenizer names exist (or are cached while offline); the adapters
    it starts from and its reference reads are adapter folders with a readable safetensors header."""
    from lapo_lightning.models.source import availability_problem
    from lapo_lightning.policy import PolicyConfig

    problems = []
    policy = built.get("model.policy")
    if isinstance(policy, PolicyConfig):
        for key, name in (("model.policy.model", policy.model), ("model.policy.tokenizer", policy.tokenizer)):
            if name is not None and (problem := availability_problem(name, key)):
                problems.append(problem)
        if policy.adapter is not None:
            problems += adapter_problems(policy.adapter, "model.policy.adapter")
    reference = built.get("model.reference")
    if reference is not None and getattr(reference, "adapter", None):
        problems += adapter_problems(reference.adapter, "model.reference.adapter")
    return problems


def adapter_problems(folder: str, key: str) -> list[str]:
    """A PEFT adapter folder: exists, has adapter_config.json (valid JSON) and readable weights."""
    import json

    from lapo_lightning.policy import ADAPTER_CONFIG

    path = Path(folder).expanduser()
    if not path.is_dir():
        return [f"{key}: no adapter folder at {folder} (a previous stage writes it: run that stage first, "
                "or fix the path)"]
    config = path / ADAPTER_CONFIG
    if not config.is_file():
        return [f"{key}: {folder} is not a PEFT adapter folder (no {ADAPTER_CONFIG} there)"]
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"{key}: {config} is not valid JSON ({first_line(e)}); re-export the adapter"]
    weights = path / "adapter_model.safetensors"
    if weights.is_file() and (problem := safetensors_problem(weights)):
        return [f"{key}: {weights} {problem}; re-export the adapter (or restore it from a checkpoint)"]
    return []


def check_tables(built: Built) -> list[str]:
    """Every stage-2 input table (a callback's ``table``) exists and parses."""
    from lapo_lightning.length_table import LengthTable, LengthTableError

    problems = []
    for key, callback in built.objects.items():
        table = getattr(callback, "table", None) if key.startswith("trainer.callbacks[") else None
        if isinstance(table, (str, os.PathLike)):
            try:
                LengthTable.load(table)
            except LengthTableError as e:
                problems.append(f"{key}.table: {e}")
    return problems


def check_outputs(cfg: Namespace, built: Built) -> list[str]:
    """Every place the run writes to is writable now, not after hours of training."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lapo_lightning.length_table import LengthTableError, check_writable

    problems = []
    folders: list[tuple[str, Any]] = [("trainer.default_root_dir", cfg.get("trainer.default_root_dir")),
                                      ("export.dirpath", cfg.get("export.dirpath"))]
    logger = cfg.get("trainer.logger")
    for i, node in enumerate(logger if isinstance(logger, list) else [logger]):
        if isinstance(node, Namespace) and isinstance(init := node.get("init_args"), Namespace):
            folders.append((f"trainer.logger{f'[{i}]' if isinstance(logger, list) else ''}.save_dir",
                            init.get("save_dir")))
    for key, callback in built.objects.items():
        if not key.startswith("trainer.callbacks["):
            continue
        if isinstance(callback, ModelCheckpoint):
            folders.append((f"{key}.dirpath", callback.dirpath))
        path = getattr(callback, "path", None)
        if isinstance(path, str) and path:  # a length table the callback writes
            try:
                check_writable(path)
            except LengthTableError as e:
                problems.append(f"{key}.path: {e}")
    for key, folder in folders:
        if isinstance(folder, (str, os.PathLike)) and str(folder) and (problem := folder_write_problem(folder)):
            problems.append(f"{key}: {problem}")
    return problems


def folder_write_problem(folder: str | os.PathLike) -> str | None:
    """Why files could not be written in ``folder`` (created if needed), else None.

    Looks at the folder, or its nearest existing parent, without creating anything: a file
    in the way, or no write permission (a read-only file system included).
    Example: ``folder_write_problem("/proc/x")`` -> ``"cannot create /proc/x: /proc is not writable"``.
    """
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create {folder}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"{existing} is not writable" if existing == path
                else f"cannot create {folder}: {existing} is not writable")
    return None


# --------------------------------------------------------------------------- 3. context
def check_model_fit(built: Built, with_prompts: bool = True) -> list[str]:
    """What the model's config and tokenizer (no weights) can tell: a readable config, adapters
    that fit the base, and every training prompt + the generation cap within its context."""
    from lapo_lightning.policy import PolicyConfig

    policy = built.get("model.policy")
    if not isinstance(policy, PolicyConfig):
        return []
    from transformers import AutoConfig

    from lapo_lightning.models.source import resolve

    try:
        config = AutoConfig.from_pretrained(resolve(policy.model), trust_remote_code=policy.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - hub, cache, remote-code and parse errors all mean "cannot load"
        return [f"model.policy.model: cannot read the model config of {policy.model!r}: {first_line(e)}"]
    problems = []
    for key, adapter in (("model.policy.adapter", policy.adapter),
                         ("model.reference.adapter", getattr(built.get("model.reference"), "adapter", None))):
        if adapter:
            problems += _adapter_fit(adapter, config, key, policy.model)
    if with_prompts:
        problems += context_problems(built, policy, config)
    return problems


def _adapter_fit(adapter: str, config, key: str, model: str) -> list[str]:

    try:
        problem = adapter_mismatch(adapter, config)
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: peft will tell
        return []
    return [f"{key}: {adapter} does not fit the base model {model}: {problem}"] if problem else []


def context_problems(built: Built, policy, config) -> list[str]:
    """Problems whose prompt plus ``max_new_tokens`` exceeds the model's context, by id."""
    from lapo_lightning.data import LapoDataModule
    from lapo_lightning.policy import load_tokenizer
    from lapo_lightning.prompts import PlainPrompt

    context = getattr(config, "max_position_embeddings", None)
    data, generation = built.get("data"), built.get("model.generation")
    if not isinstance(context, int) or not isinstance(data, LapoDataModule) or generation is None:
        return []
    prompt = built.get("model.prompt") or PlainPrompt()
    stage2 = any(getattr(cb, "table", None) for k, cb in built.objects.items() if k.startswith("trainer.callbacks["))
    budget = generation.max_new_tokens if stage2 else None  # the longest budget sentence stage 2 can state
    try:
        tokenizer = load_tokenizer(policy)
    except Exception as e:  # noqa: BLE001
        return [f"model.policy.tokenizer: cannot load the tokenizer of {policy.tokenizer or policy.model!r}: "
                f"{first_line(e)}"]
    cap, problems, over = generation.max_new_tokens, [], 0
    for key, problems_of in (("data.train_file", data.train_problems), ("data.val_file", data.val_problems)):
        if not problems_of:
            continue
        texts = [prompt.render(p.problem, budget, tokenizer) for p in problems_of]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        source = data.train_file if key == "data.train_file" or not data.val_file else data.val_file
        for p, n in zip(problems_of, lengths):
            if n + cap > context:
                over += 1
                if len(problems) < MAX_LINES_PER_CHECK:
                    problems.append(
                        f"{key}: problem {p.id!r} in {source} needs {n} prompt tokens + "
                        f"model.generation.max_new_tokens {cap} = {n + cap}, over the model's context of "
                        f"{context} tokens (max_position_embeddings of {policy.model}); shorten or drop it, or "
                        "lower model.generation.max_new_tokens")
    if over > len(problems):
        problems.append(f"data: ... and {over - len(problems)} more problems over the model's context")
    return problems
