"""The settings stage of the start-up check: every plugin and settings dataclass built on its own.

Where it sits in the flow: ``preflight.check`` (``lapo fit``) and ``lapo check`` call
:func:`check_settings` on the parsed config first. Each section (``model.grpo``,
``model.rewards[1]``, ``trainer.callbacks[0]``, ...) is built from its parsed values so its own
checks report under its key, then the training rules that span sections run
(``config.training_problems``). The objects built land in a :class:`Built`, which the inputs
stage (``preflight_inputs.py``) reads.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from jsonargparse import Namespace

from lapo_lightning.models.adapter_files import first_line


@dataclasses.dataclass
class Built:
    """Objects built from the config, by key ("model.policy", "data", "trainer.callbacks[1]")."""

    objects: dict[str, Any] = dataclasses.field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.objects.get(key)

    def of_type(self, cls: type) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.objects.items() if isinstance(v, cls)]



def check_settings(cfg: Namespace, built: Built) -> list[str]:
    """The settings' problems, one line each; fills ``built`` with what could be built."""
    rules = rule_problems(cfg)
    return build_sections(cfg, built, build_model=not rules) + rules + trainer_problems(cfg)


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
