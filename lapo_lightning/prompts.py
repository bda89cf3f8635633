"""Prompt templates and the stage-2 budget sentence: the only module that knows their text.

The GRPO module renders each ``ProblemBatch`` row with a :class:`PromptTemplate` before
the rollout sampler tokenizes it; the stage-2 callback only sets ``budgets``. The paper's
placements of the budget sentence: right after the opening ``<think>`` (default, "think"),
before it ("outside"), as a range ("range"), or not at all ("none", the implicit variant
where only the reward carries the budget). Stage 1 is any template with ``budget=None``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import operator
import re
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal, get_args

# Verbatim from ZJU-REAL/LAPO openrlhf/datasets/prompts_dataset.py (`system_prompt`),
# including its "answer here ." spacing: stage-1 statistics depend on the exact text.
R1_SYSTEM = (
    "You are a helpful assistant. A conversation between User and Assistant. The user asks a "
    "question, and the Assistant solves it. The Assistant first thinks about the reasoning "
    "process in the mind and then provides the user with the answer. The reasoning process is "
    "enclosed within <think> </think> tags, respectively, i.e., <think> reasoning process here "
    "</think> answer here ."
)
INSTRUCTION = " Please think step by step and output the final answer within \\boxed{}."
# The official repo's f-string, with the instruction pulled out so it can be changed alone.
PLAIN_TEMPLATE = "{system} User: {problem}{instruction} Assistant: <think>"
THINK = "<think>"
THINK_END = "</think>"

# The official stage-2 sentence (appended right after "<think>" there). Render and parse
# both derive from these two constants, so they cannot drift apart.
BUDGET_SENTENCE = " I will answer the question with {n} tokens."
BUDGET_RANGE_SENTENCE = " I will answer the question with {low} to {high} tokens."

Placement = Literal["think", "outside", "range", "none"]

_BUDGET_RE = re.compile(re.escape(BUDGET_SENTENCE.strip()).replace(r"\{n\}", r"(\d+)"))
_RANGE_RE = re.compile(
    re.escape(BUDGET_RANGE_SENTENCE.strip()).replace(r"\{low\}", r"(\d+)").replace(r"\{high\}", r"(\d+)")
)
_PLACEHOLDER = re.compile(r"\{(system|problem|instruction)\}")
# Written beside an exported adapter, so `lapo answer` renders questions as training did.
PROMPT_FILE = "lapo_prompt.json"


def render_budget(n: int) -> str:
    """``render_budget(512)`` -> ``" I will answer the question with 512 tokens."``"""
    n = operator.index(n)  # ints only: a float budget is a bug upstream, not something to round
    if n < 0:
        raise ValueError(f"budget must be >= 0 tokens, got {n}")
    return BUDGET_SENTENCE.format(n=n)


def parse_budget(text: str) -> int | None:
    """The budget stated in a prompt or completion (the last sentence wins), else None."""
    found = _BUDGET_RE.findall(text)
    return int(found[-1]) if found else None


def budget_range(n: int, width: int) -> tuple[int, int]:
    """The range stated for budget ``n``: ``width`` tokens centred on it, clipped at 0.

    Example: ``budget_range(500, 200)`` -> ``(400, 600)``; ``budget_range(50, 200)`` -> ``(0, 150)``.
    """
    n, width = operator.index(n), operator.index(width)
    return max(0, n - width // 2), n + width - width // 2


def render_budget_range(low: int, high: int) -> str:
    """``render_budget_range(400, 600)`` -> ``" I will answer the question with 400 to 600 tokens."``"""
    low, high = operator.index(low), operator.index(high)
    if not 0 <= low <= high:
        raise ValueError(f"budget range must satisfy 0 <= low <= high, got ({low}, {high})")
    return BUDGET_RANGE_SENTENCE.format(low=low, high=high)


def parse_budget_range(text: str) -> tuple[int, int] | None:
    """The (low, high) range stated in a prompt or completion (the last wins), else None."""
    found = _RANGE_RE.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def opens_think(prompt: str) -> bool:
    """True when a rendered prompt leaves a ``<think>`` block open for the completion: its last
    ``<think>`` has no ``</think>`` after it. The verifier then grades only what the completion
    writes after closing it.

    Examples: the plain template's ``"... </think> answer here . User: 2+3 ... Assistant: <think>"``
    -> True (the system text's pair is closed, the assistant's tag is not);
    ``"2+3 Assistant:"`` -> False; ``"<think>\\n\\n</think>\\n\\n"`` (thinking switched off) -> False.
    """
    return prompt.rfind(THINK) > prompt.rfind(THINK_END)  # rfind gives -1 when absent


class PromptTemplate(ABC):
    """Renders one problem (plus an optional budget) into the exact text to tokenize.

    Subclasses produce the stage-1 text, whose last ``<think>`` is the assistant turn's
    opening tag; :meth:`render` adds the budget sentence around it (a template without
    thinking overrides :meth:`render` to place it, see :class:`ChatPrompt`).

    Args:
        placement: where the budget sentence goes ("think", "outside", "range", "none").
        range_width: width in tokens of the stated range for placement "range" (see
            :func:`budget_range`).
    """

    def __init__(self, placement: Placement = "think", range_width: int = 200) -> None:
        if placement not in get_args(Placement):
            raise ValueError(f"placement must be one of {get_args(Placement)}, got {placement!r}")
        if range_width < 0:
            raise ValueError(f"range_width must be >= 0, got {range_width}")
        self.placement = placement
        self.range_width = range_width

    @abstractmethod
    def render_stage1(self, problem: str, tokenizer=None) -> str:
        """The prompt without any budget sentence."""

    def render(self, problem: str, budget: int | None = None, tokenizer=None) -> str:
        """Full prompt text, to tokenize with ``add_special_tokens=False``.

        ``budget=None`` gives the stage-1 text whatever the placement, so stage 1 and
        stage 2 render the problem identically and differ only by the sentence.
        Example (plain, "think"): ``... Assistant: <think> I will answer the question with 300 tokens.``
        """
        text = self.render_stage1(problem, tokenizer)
        if budget is None or self.placement == "none":
            return text
        at = text.rfind(THINK)  # the assistant's opening tag (the system text mentions <think> too)
        if at < 0:
            raise ValueError(f"placement={self.placement!r} needs a '{THINK}' in the rendered prompt")
        after = at + len(THINK)
        if self.placement == "outside":
            # "Assistant: <think>" -> "Assistant: I will ... tokens. <think>"
            return text[:at] + render_budget(budget).strip() + " " + text[at:]
        if self.placement == "range":
            sentence = render_budget_range(*budget_range(budget, self.range_width))
        else:
            sentence = render_budget(budget)
        return text[:after] + sentence + text[after:]


class PlainPrompt(PromptTemplate):
    """The official LAPO prompt, no chat template and no BOS (the default).

    Args:
        system: system instruction placed at ``{system}``; default the R1-style text of
            the official repository.
        instruction: text placed at ``{instruction}``, right after the problem.
        template: the layout, with ``{system}``, ``{problem}`` and ``{instruction}``
            placeholders (other braces are literal). Its last ``<think>`` is the assistant's
            opening tag and must come after every placeholder.
        placement: see :class:`PromptTemplate`.
        range_width: see :class:`PromptTemplate`.
    """

    def __init__(
        self,
        system: str = R1_SYSTEM,
        instruction: str = INSTRUCTION,
        template: str = PLAIN_TEMPLATE,
        placement: Placement = "think",
        range_width: int = 200,
    ) -> None:
        super().__init__(placement, range_width)
        if "{problem}" not in template:
            raise ValueError("template must contain the '{problem}' placeholder")
        if placement != "none":
            think_at = template.rfind(THINK)
            if think_at < 0:
                raise ValueError(f"template must contain '{THINK}' for placement={placement!r}")
            last_placeholder = max(m.end() for m in _PLACEHOLDER.finditer(template))
            if think_at < last_placeholder:
                raise ValueError(f"template: the last '{THINK}' must follow every placeholder")
        self.system, self.instruction, self.template = system, instruction, template

    def render_stage1(self, problem: str, tokenizer=None) -> str:
        values = {"system": self.system, "problem": problem, "instruction": self.instruction}
        # One pass with re.sub, not str.format: problem text is full of LaTeX braces.
        return _PLACEHOLDER.sub(lambda m: values[m[1]], self.template)


class ChatPrompt(PromptTemplate):
    """The tokenizer's own chat template, the assistant turn opened for the model to continue.

    With thinking (``think`` true, or by default when the tokenizer has a ``<think>`` token)
    the assistant turn is prefilled with ``<think>``, unless the template already opens the
    thinking block itself (DeepSeek-R1-Distill and some Qwen3 variants end the generation
    prompt with ``<think>\\n``), and the budget sentence goes right after it, as in the paper.

    Without thinking (``think`` false, or by default for a tokenizer with no ``<think>``
    token, such as SmolLM2 or Llama-3 instruct models) nothing is prefilled: the model
    reasons in its answer. The reasoning then starts with the assistant turn, so placement
    "think" (and "range") starts the turn with the budget sentence and a line break, and
    "outside" ends the user message with it. The verifier grades the whole completion.

    Args:
        system: optional system message; None sends none (R1-distilled models advise that).
        instruction: appended to the problem in the user message.
        think: prefill ``<think>``; None decides from the tokenizer (see above).
        placement: see :class:`PromptTemplate`.
        range_width: see :class:`PromptTemplate`.
    """

    def __init__(
        self,
        system: str | None = None,
        instruction: str = INSTRUCTION,
        think: bool | None = None,
        placement: Placement = "think",
        range_width: int = 200,
    ) -> None:
        super().__init__(placement, range_width)
        self.system, self.instruction, self.think = system, instruction, think

    def thinks(self, tokenizer) -> bool:
        """Whether the assistant turn opens ``<think>``: ``think`` if set, else whether the
        template opens it by itself or the vocabulary has it as one token."""
        if self.think is not None:
            return self.think
        return opens_think(self._chat(".", tokenizer)) or THINK in tokenizer.get_vocab()

    def render_stage1(self, problem: str, tokenizer=None) -> str:
        text = self._chat(problem + self.instruction, tokenizer)
        if not self.thinks(tokenizer) or opens_think(text):
            return text
        return text + THINK

    def render(self, problem: str, budget: int | None = None, tokenizer=None) -> str:
        if budget is None or self.placement == "none" or self.thinks(tokenizer):
            return super().render(problem, budget, tokenizer)
        if self.placement == "outside":
            return self._chat(problem + self.instruction + render_budget(budget), tokenizer)
        if self.placement == "range":
            sentence = render_budget_range(*budget_range(budget, self.range_width))
        else:
            sentence = render_budget(budget)
        return self.render_stage1(problem, tokenizer) + sentence.strip() + "\n"

    def _chat(self, user: str, tokenizer) -> str:
        if tokenizer is None:
            raise ValueError("ChatPrompt.render needs the policy tokenizer (tokenizer=None given)")
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
            raise ValueError(f"tokenizer {name!r} has no chat_template; use PlainPrompt for base models")
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


PROMPTS = {"plain": PlainPrompt, "chat": ChatPrompt}
"""The templates ``lapo answer --prompt`` offers by name."""


def save_prompt(prompt: PromptTemplate, folder: str | Path) -> Path:
    """Record ``prompt`` (its class and init arguments) as ``folder/lapo_prompt.json``.

    Every template keeps each init argument as an attribute of the same name, which is
    what makes this a faithful record.
    """
    path = Path(folder) / PROMPT_FILE
    path.write_text(json.dumps(prompt_record(prompt), indent=1))
    return path


def prompt_record(prompt: PromptTemplate) -> dict:
    """``{"class_path", "init_args"}``: what :func:`save_prompt` writes; equal records render alike."""
    cls = type(prompt)
    args = {name: getattr(prompt, name) for name in inspect.signature(cls.__init__).parameters if name != "self"}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def load_prompt(folder: str | Path) -> PromptTemplate | None:
    """The prompt recorded by :func:`save_prompt` in ``folder``; None when there is none."""
    path = Path(folder) / PROMPT_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    module, _, name = record["class_path"].rpartition(".")
    # Only this package's templates (or a module already imported): a file must not make us
    # import arbitrary code.
    if not (module.startswith("lapo_lightning.") or module in sys.modules):
        raise ValueError(f"{path}: refusing to import {module!r} for the recorded prompt; choose one with --prompt")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, PromptTemplate)):
        raise ValueError(f"{path}: {record['class_path']} is not a PromptTemplate")
    return cls(**record["init_args"])
