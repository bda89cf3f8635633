"""Prompt templates and the stage-2 budget sentence: the only module that knows their text.

The GRPO module renders each ``ProblemBatch`` row with a :class:`PromptTemplate` before
the rollout sampler tokenizes it; the stage-2 callback only sets ``budgets``. The paper's
placements of the budget sentence: right after the opening ``<think>`` (default, "think"),
before it ("outside"), as a range ("range"), or not at all ("none", the implicit variant
where only the reward carries the budget). Stage 1 is any template with ``budget=None``.
"""

from __future__ import annotations

import operator
import re
from abc import ABC, abstractmethod
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

    Subclasses produce the stage-1 text, which must contain the assistant turn's opening
    ``<think>`` as its last ``<think>``; :meth:`render` adds the budget sentence around it.

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
    """The tokenizer's own chat template, with the assistant turn prefilled with ``<think>``.

    If the template already opens the thinking block (DeepSeek-R1-Distill, some Qwen3
    variants end the generation prompt with ``<think>\\n``) no second tag is added.

    Args:
        system: optional system message; None sends none (R1-distilled models advise that).
        instruction: appended to the problem in the user message.
        placement: see :class:`PromptTemplate`.
        range_width: see :class:`PromptTemplate`.
    """

    def __init__(
        self,
        system: str | None = None,
        instruction: str = INSTRUCTION,
        placement: Placement = "think",
        range_width: int = 200,
    ) -> None:
        super().__init__(placement, range_width)
        self.system, self.instruction = system, instruction

    def render_stage1(self, problem: str, tokenizer=None) -> str:
        if tokenizer is None:
            raise ValueError("ChatPrompt.render needs the policy tokenizer (tokenizer=None given)")
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
            raise ValueError(f"tokenizer {name!r} has no chat_template; use PlainPrompt for base models")
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        messages.append({"role": "user", "content": problem + self.instruction})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text if text.rstrip().endswith(THINK) else text + THINK
