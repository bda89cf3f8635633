"""``lapo fit``'s start-up check: everything that can be checked without the model's weights, in one pass.

Flow: ``fit_cli.LapoCLI`` parses the YAML and command line (jsonargparse), then calls
:func:`check` on the parsed config *before* ``instantiate_classes``; if it returns anything,
the command prints one line per problem, each naming its config key or file and line, and
exits with status 2. Nothing here loads weights, so a typo costs seconds, not a model load.

What is checked, in order (every stage runs, so all problems come out together):

1. settings: each plugin and settings dataclass is built on its own from the parsed values
   (``model.grpo``, ``model.rewards[1]``, ``trainer.callbacks[0]``, ...), so each one's own
   checks (``__post_init__``, ``__init__``) report under its key; then the training rules
   that span sections (``config.training_problems``: temperature 0, tiny generation caps,
   negative reward weights, KL without a reference, micro-batch divisibility).
2. inputs (``lapo fit`` only; configs may name files a previous stage writes): the data
   files (every bad line), the model name (a missing local folder, a hub id not cached while
   offline), adapters (folder, ``adapter_config.json``, a readable safetensors header, shapes
   that fit the base), stage-2 length tables (exist and parse), and every output location
   (checkpoint folder, export folder, root dir, logger dir, length-table paths) writable.
3. context: once the model's config and tokenizer are read (no weights), every training
   prompt plus ``model.generation.max_new_tokens`` must fit ``max_position_embeddings``.

The objects built here are thrown away: jsonargparse builds the real ones right after, so
constructors must stay cheap (every class in this project loads weights in
``configure_model``, never in ``__init__``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from lapo_lightning.adapter_files import adapter_mismatch, first_line, safetensors_problem

MAX_LINES_PER_CHECK = 20  # e.g. prompts over the context: the first ones, then a count


# --------------------------------------------------------------------------- entry point
def check(cfg: Namespace, inputs: bool = True) -> list[str]:
    """Every problem found in a parsed ``lapo fit`` config (the ``fit`` section), one line each.

    ``inputs=False`` checks the settings only (no files, no model config): what a config that
    names the outputs of an earlier stage can be held to before that stage has run.
    """
    built = Built()
    rules = rule_problems(cfg)
    problems = build_sections(cfg, built, build_model=not rules) + rules + trainer_problems(cfg)
    if inputs:
        data_problems = check_data(built)
        problems += data_problems
        problems += check_outputs(cfg, built)
        model_problems = check_model_sources(built)
        problems += model_problems
        problems += check_tables(built)
        if not model_problems:
            problems += check_model_fit(built, with_prompts=not data_problems)
    return _dedupe(problems)


@dataclasses.dataclass
class Built:
    """Objects built from the config, by key ("model.policy", "data", "trainer.callbacks[1]")."""

    objects: dict[str, Any] = dataclasses.field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.objects.get(key)

    def of_type(self, cls: type) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.objects.items() if isinstance(v, cls)]


# --------------------------------------------------------------------------- 1. settings
def build_sections(cfg: Namespace, built: Built, build_model: bool = True) -> list[str]:
    """Build ``model``, ``data`` and ``trainer.callbacks`` piece by piece; one line per failure.

    A class whose own arguments failed is not built (its errors are already reported), and
    the top-level module is not built with ``build_model=False`` (a training rule already
    failed, and the module's own constructor would repeat it in other words).
    """
    problems: list[str] = []
    for section in ("model", "data"):
        node = cfg.get(section)
        if isinstance(node, Namespace) and node.get("class_path"):
            _build(node, section, None, built, problems, build_self=section != "model" or build_model)
    callbacks = cfg.get("trainer.callbacks") if "trainer" in cfg else None
    if isinstance(callbacks, Namespace):
        callbacks = [callbacks]
    for i, node in enumerate(callbacks or []):
        if isinstance(node, Namespace):
            _build(node, f"trainer.callbacks[{i}]", None, built, problems)
    return problems


def _build(value: Any, key: str, hint: Any, built: Built, problems: list[str],
           build_self: bool = True) -> tuple[Any, bool]:
    """(object, ok) for one parsed value; class and dataclass nodes are built bottom-up."""
    if isinstance(value, list):
        element = _list_element(hint)
        items = [_build(v, f"{key}[{i}]", element, built, problems) for i, v in enumerate(value)]
        return [obj for obj, _ in items], all(ok for _, ok in items)
    if not isinstance(value, Namespace):
        return value, True
    if value.get("class_path"):
        from jsonargparse.typing import import_object  # noqa: PLC0415 - jsonargparse's own resolver

        try:
            cls = import_object(value.class_path)
        except Exception as e:  # noqa: BLE001 - any import failure means "cannot use this plugin"
            problems.append(f"{key}: cannot import class_path {value.class_path!r}: {first_line(e)}")
            return None, False
        init = value.get("init_args")
        args = {**(vars(init) if isinstance(init, Namespace) else {}), **(value.get("dict_kwargs") or {})}
    else:
        cls = _dataclass_in(hint)
        if cls is None:  # a plain mapping (dict-typed argument): nothing of ours to build
            return value, True
        args = vars(value)
    hints = _init_hints(cls)
    kwargs, ok = {}, True
    for name, arg in args.items():
        obj, good = _build(arg, f"{key}.{name}", hints.get(name), built, problems)
        kwargs[name], ok = obj, ok and good
    if not ok or not build_self:
        return None, False
    try:
        obj = cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - a plugin may raise anything; report it under its key
        problems.extend(problem_lines(e, key))
        return None, False
    built.objects[key] = obj
    return obj, True


def _init_hints(cls: type) -> dict[str, Any]:
    """Type hints of a class's init arguments, following ``**kwargs`` up to the base classes
    (``SFTDataModule(*args, completion_field, **kwargs)`` passes ``fields`` to ``LapoDataModule``)."""
    if dataclasses.is_dataclass(cls):
        targets = [cls]
    else:
        targets = [base.__init__ for base in cls.__mro__ if "__init__" in vars(base) and base is not object]
    hints: dict[str, Any] = {}
    for target in reversed(targets):  # the subclass's own hints win
        try:
            hints.update(typing.get_type_hints(target))
        except Exception:  # noqa: BLE001 - unresolvable annotations: build nested values as given
            continue
    return hints


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass in a type hint such as ``GenerationConfig`` or ``PolicyConfig | None``."""
    if inspect.isclass(hint) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if inspect.isclass(arg) and dataclasses.is_dataclass(arg):
            return arg
    return None


def _list_element(hint: Any) -> Any:
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is list and typing.get_args(candidate):
            return typing.get_args(candidate)[0]
    return None


def problem_lines(error: BaseException, key: str) -> list[str]:
    """An exception as lines that each name a config key: its ``problems`` if it lists them,
    else its message lines (a header line such as "invalid GRPO config:" is dropped); a line
    that does not start with a key gets ``key: `` in front."""
    lines = list(getattr(error, "problems", None) or [])
    if not lines:
        text = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
        lines = [ln for ln in text if not (ln.endswith(":") and len(text) > 1)] or [type(error).__name__]
    return [ln if _names_a_key(ln) else f"{key}: {ln}" for ln in lines]


def _names_a_key(line: str) -> bool:
    head = line.split(" ", 1)[0].rstrip(":,")
    return "." in head and head.split(".", 1)[0] in ("model", "data", "trainer", "export", "seed_everything")


# --------------------------------------------------------------------------- training rules
def rule_problems(cfg: Namespace) -> list[str]:
    """``config.training_problems`` on the parsed values of a GRPO model (others: none).

    Reads plain values, not built objects, so the rules report even when a section failed to build.
    """
    from lapo_lightning.config import GRPOConfig, training_problems
    from lapo_lightning.module import GRPOModule
    from lapo_lightning.rollout import GenerationConfig

    model = cfg.get("model")
    cls = _class_of(model)
    if cls is None or not issubclass(cls, GRPOModule):
        return []
    init = model.get("init_args") or Namespace()
    grpo = _values(init.get("grpo"), GRPOConfig)
    gen = _values(init.get("generation"), GenerationConfig)
    weights = []
    for i, reward in enumerate(init.get("rewards") or []):
        weight = (reward.get("init_args") or Namespace()).get("weight") if isinstance(reward, Namespace) else None
        if isinstance(weight, (int, float)):
            weights.append((f"model.rewards[{i}]", float(weight)))
    reference = _class_of(init.get("reference"))
    data = cfg.get("data")
    per_step = (data.get("init_args") or Namespace()).get("problems_per_step") if isinstance(data, Namespace) else None
    try:
        return training_problems(
            group_size=grpo["group_size"], micro_batch_size=grpo["micro_batch_size"], kl_coef=grpo["kl_coef"],
            temperature=gen["temperature"], max_new_tokens=gen["max_new_tokens"], reward_weights=weights,
            allow_negative_reward_weights=bool(grpo.get("allow_negative_reward_weights", False)),
            reference_needs_forward=getattr(reference, "needs_forward", True),
            problems_per_step=per_step if isinstance(per_step, int) and per_step > 0 else None,
        )
    except TypeError:  # a value of the wrong type: its section's own check reports it
        return []


def trainer_problems(cfg: Namespace) -> list[str]:
    """Trainer settings that would end badly after the start-up check: ``max_steps`` 0 trains
    nothing yet exports its untrained weights (and an empty length table) over the run's
    outputs; below -1 Lightning itself refuses, only after the model is built."""
    steps = cfg.get("trainer.max_steps")
    if steps == 0:
        return ["trainer.max_steps: 0 trains nothing, yet the run would still export untrained weights (and an empty "
                "length table) over its outputs; set a number of optimizer steps > 0, or -1 to train by max_epochs"]
    if isinstance(steps, int) and steps < -1:
        return [f"trainer.max_steps: must be > 0, or -1 to train by max_epochs (got {steps})"]
    return []


def _class_of(node: Any) -> type | None:
    if not (isinstance(node, Namespace) and node.get("class_path")):
        return None
    from jsonargparse.typing import import_object

    try:
        return import_object(node.class_path)
    except Exception:  # noqa: BLE001 - reported by build_sections
        return None


def _values(node: Any, dataclass: type) -> dict:
    """A settings section's values, with the dataclass defaults for what the config leaves out."""
    values = {f.name: f.default for f in dataclasses.fields(dataclass) if f.default is not dataclasses.MISSING}
    if isinstance(node, Namespace):
        values.update(vars(node))
    return values


# --------------------------------------------------------------------------- 2. inputs
def check_data(built: Built) -> list[str]:
    """Every problem in the data files, through the data module's own loading (file:line each)."""
    from lapo_lightning.data import DataError, LapoDataModule

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
    from lapo_lightning.model_source import availability_problem
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

    from lapo_lightning.model_source import resolve

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


# --------------------------------------------------------------------------- helpers


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    return [ln for ln in lines if not (ln in seen or seen.add(ln))]


def report(problems: list[str], write: Callable[[str], Any], command: str = "lapo fit") -> None:
    """Print the problems: a count, then one line each."""
    s = "" if len(problems) == 1 else "s"
    write(f"{command}: {len(problems)} problem{s} found before loading any weights:\n")
    for line in problems:
        write(f"  {line}\n")
