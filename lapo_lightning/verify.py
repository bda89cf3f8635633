"""Answer extraction and equivalence checking: the only module that knows answer formats.

The GRPO module calls :class:`MathVerifier` right after sampling, telling it which prompts
left ``<think>`` open (``prompts.opens_think``); it fills ``RolloutBatch.correct`` / ``parsed``
/ ``unclosed`` and every reward reads ``batch.correct`` from there. Departs from the official
LAPO scripts, which compare the *first* ``\\boxed{}`` of the whole response by exact string
match (a regex that stops at the first ``}``, so ``\\boxed{\\frac{1}{2}}`` never matches): we
take the *last* balanced box after the reasoning (:func:`after_reasoning`) and test
equivalence with math-verify.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from math_verify import parse, verify
from torch import Tensor

from lapo_lightning.boxed import BOX_OPEN as _BOX_OPEN
from lapo_lightning.boxed import extract_boxed
from lapo_lightning.prompts import THINK, THINK_END

# The one fallback when there is no box: "the answer is X" / "final answer: X" (last one).
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_WORKING = re.compile(r"^[\d\s.,+\-*/×÷()$]+=")  # "4 + 1 = 5": arithmetic before the result
# A fallback answer must look like a final answer, not a sentence ("the answer is not clear
# yet, let me check"): at most this many characters, and math (see _looks_like_an_answer).
_MAX_FALLBACK_CHARS = 40
_MATH_MARK = re.compile(r"[0-9\\^_=+*/<>√π∞]")  # a digit, a LaTeX command, or an operator
_GOLD_CACHE_SIZE = 100_000


def after_reasoning(text: str, prompt_opened: bool = False) -> str | None:
    """The part of a completion that may hold its final answer: the text after its last
    ``</think>`` (all of it when it has none and the reasoning was never opened), or None when
    the completion ended still reasoning: the prompt (``prompt_opened``) or the completion
    opened ``<think>`` and no ``</think>`` follows the last one. A box written mid-thought,
    typically in a completion cut off by the token cap, is not an answer.

    Examples: ``after_reasoning(" 2+3=5 </think> \\boxed{5}", True)`` -> ``" \\boxed{5}"``;
    ``after_reasoning(" 2+3=5 so \\boxed{5} hmm", True)`` -> None;
    ``after_reasoning("<think> 2+3=5 \\boxed{5}")`` -> None; ``after_reasoning("\\boxed{5}")`` -> ``"\\boxed{5}"``.
    """
    close = text.rfind(THINK_END)
    if text.rfind(THINK) > close or (prompt_opened and close < 0):
        return None
    return text[close + len(THINK_END):] if close >= 0 else text


def extract_answer(text: str, fallback: bool = True) -> str | None:
    """The final answer string of a completion, or None.

    1. :func:`extract_boxed`.
    2. Fallback (only when there is no box, or only an empty one): the last "answer is X"
       / "answer: X" phrase after the last ``</think>`` (the whole text if there is none),
       X up to the end of its line or sentence, without ``$`` and a trailing period, and
       only the result when X is arithmetic working (``4 + 1 = 5`` -> ``5``); kept only when
       it looks like a final answer (:func:`_looks_like_an_answer`: short, and math or one word).

    Example: ``extract_answer("</think> The final answer is $3/4$.")`` -> ``"3/4"``;
    ``extract_answer("The final answer is 4 + 1 = 5.  So, the answer is 5.")`` -> ``"5"``.
    """
    if _BOX_OPEN.search(text):
        boxed = extract_boxed(text)
        if boxed is None:  # the last box never closes (cut off by the cap): no answer at all
            return None
        if boxed.strip():
            return boxed.strip()
        # An empty box is no answer, often the instruction echoed ("within \boxed{}"): fall through.
    if not fallback:
        return None
    tail = text.rsplit(THINK_END, 1)[-1]
    starts = [m.end() for m in _ANSWER_PHRASE.finditer(tail)]  # the last phrase, even on one line
    if not starts:
        return None
    answer = tail[starts[-1]:].split("\n", 1)[0].strip()
    answer = re.split(r"\.\s", answer, maxsplit=1)[0]  # "5. Thanks!" -> "5" (keeps "3.5")
    answer = answer.strip().rstrip(".").strip().strip("$").strip()
    if _WORKING.match(answer):  # "4 + 1 = 5" -> "5"; "x = 3" stays
        answer = answer.rsplit("=", 1)[-1].strip()
    return answer if _looks_like_an_answer(answer) else None


def _looks_like_an_answer(text: str) -> bool:
    """The fallback's rule: at most ``_MAX_FALLBACK_CHARS`` (40) characters, and either math
    (a digit, a backslash, or one of ``^ _ = + * / < > √ π ∞``) or a single word.

    Examples: ``"-9"``, ``"3/4"``, ``"x = 3"``, ``"\\frac{1}{2}"``, ``"(C)"``, ``"yes"`` pass;
    ``"not clear yet"`` (words, no math) and a 60-character sentence with numbers do not.
    """
    return 0 < len(text) <= _MAX_FALLBACK_CHARS and (_MATH_MARK.search(text) is not None or " " not in text)


_SPACING = re.compile(r"\s+|\\[,;:! ]|\\left|\\right|\$")


def _normalise(answer: str) -> str:
    """Cheap canonical form for the fast path (``\\dfrac{1}{2}.`` == ``\\frac{1}{2}``)."""
    answer = _SPACING.sub("", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return answer.rstrip(".")


def _as_latex(answer: str) -> str:
    """Wrap a bare answer so math-verify's LaTeX extractor sees exactly that expression."""
    if "\\boxed" in answer or "$" in answer:
        return answer
    return "\\boxed{" + answer + "}"


class _Timeout(BaseException):
    # BaseException so sympy's and math-verify's broad `except Exception` cannot swallow it
    # and keep going with the alarm already spent.
    pass


@contextmanager
def _time_limit(seconds: float):
    """Raise :class:`_Timeout` after ``seconds`` (wall clock), where that is possible.

    Uses SIGALRM, which only the main thread may set. Off the main thread, on platforms
    without ``setitimer``, or when someone else's interval timer is already running (we
    must not clobber it), the block runs without a limit.
    """
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _DropTimeoutDisabledWarning(logging.Filter):
    # math-verify warns once that its own timeout is off; we disable it on purpose (it
    # raises off the main thread) and apply `_time_limit` instead.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


@dataclass
class VerifyResult:
    correct: Tensor  # [N] bool, the completion's answer is equivalent to the reference
    parsed: Tensor  # [N] bool, an answer was extracted and parsed (False = verifier miss)
    unclosed: Tensor  # [N] bool, the reasoning was opened and never closed (so neither of the above)


class Verifier:
    """Base class: judges ``texts[i]`` against ``answers[i]`` for N completions.

    Args:
        think_tags: the model reasons inside ``<think> ... </think>``: grade only the text
            after the reasoning (:func:`after_reasoning`), and a completion whose reasoning
            was opened and never closed is incorrect. False grades the whole text, for models
            that write no think tags (and the random-init debug models, which never close one).
    """

    think_tags: bool = True  # class default too, for subclasses that skip __init__

    def __init__(self, think_tags: bool = True) -> None:
        self.think_tags = think_tags

    def __call__(self, texts: list[str], answers: list[str], opened: list[bool] | None = None) -> VerifyResult:
        """``opened[i]``: rollout i's prompt left ``<think>`` open (``prompts.opens_think``);
        None means no prompt did."""
        raise NotImplementedError

    def graded_text(self, text: str, opened: bool = False) -> str | None:
        """The part of ``text`` that is graded; None when its reasoning never closed."""
        return after_reasoning(text, opened) if self.think_tags else text

    def graded_texts(self, texts: list[str], answers: list[str], opened: list[bool] | None) -> list[str | None]:
        """:meth:`graded_text` of each completion, after checking that the three lists line up."""
        if len(texts) != len(answers):
            raise ValueError(f"texts and answers differ in length: {len(texts)} vs {len(answers)}")
        if opened is None:
            opened = [False] * len(texts)
        elif len(opened) != len(texts):
            raise ValueError(f"texts and opened differ in length: {len(texts)} vs {len(opened)}")
        return [self.graded_text(text, o) for text, o in zip(texts, opened)]


def _flags(values: list[bool]) -> Tensor:
    return torch.tensor(values, dtype=torch.bool)


class ContainsAnswer(Verifier):
    """Lenient check for smoke tests and toy tasks: correct when the reference answer occurs
    in the graded text, not as part of a longer number ("7" is not found in "17" or "7.5").

    The debug configs use it so that a random-init model is sometimes right, which is
    what exercises the length statistics end to end; they set ``think_tags: false`` (see
    :class:`Verifier`), since such a model never closes the prompt's ``<think>``. Every
    non-empty graded text counts as parsed.
    """

    def __call__(self, texts: list[str], answers: list[str], opened: list[bool] | None = None) -> VerifyResult:
        graded = self.graded_texts(texts, answers, opened)
        found = [g is not None and re.search(rf"(?<![\d.]){re.escape(a.strip())}(?!\.?\d)", g) is not None
                 for g, a in zip(graded, answers)]
        return VerifyResult(correct=_flags(found), parsed=_flags([bool(g and g.strip()) for g in graded]),
                            unclosed=_flags([g is None for g in graded]))


class MathVerifier(Verifier):
    """Checks N completions against N reference answers; never raises on model text.

    Args:
        timeout_s: wall-clock limit for parsing plus comparing one completion (and for
            parsing one reference). Enforced with SIGALRM in the main thread only; off the
            main thread the check runs unguarded (math-verify's own timeout would raise
            there). Training calls it from ``training_step``, which runs in the main thread.
        fallback: also accept "the answer is X" when a completion has no ``\\boxed{}``.
        think_tags: see :class:`Verifier`; False grades the whole text.
    """

    def __init__(self, timeout_s: float = 5.0, fallback: bool = True, think_tags: bool = True) -> None:
        super().__init__(think_tags)
        self.timeout_s = timeout_s
        self.fallback = fallback
        self._gold_cache: dict[str, list] = {}

    def __call__(self, texts: list[str], answers: list[str], opened: list[bool] | None = None) -> VerifyResult:
        """``texts[i]`` is judged against ``answers[i]`` (both [N] strings); ``opened`` as in
        :class:`Verifier`.

        Example: ``MathVerifier()(["\\boxed{0.5}", "no idea", "so \\boxed{3}"], ["\\frac{1}{2}", "3", "3"],
        opened=[False, False, True])`` -> ``correct=[True, False, False]``,
        ``parsed=[True, False, False]``, ``unclosed=[False, False, True]``.
        """
        graded = self.graded_texts(texts, answers, opened)
        results = [self._check(text, answer) for text, answer in zip(graded, answers)]
        correct = _flags([c for c, _ in results])  # [N]
        parsed = _flags([p for _, p in results])  # [N]
        return VerifyResult(correct=correct, parsed=parsed, unclosed=_flags([g is None for g in graded]))

    def _check(self, text: str | None, answer: str) -> tuple[bool, bool]:
        """(correct, parsed) for one graded text (None: the reasoning never closed)."""
        if text is None:
            return False, False
        try:
            predicted = extract_answer(text, fallback=self.fallback)
        except Exception:  # noqa: BLE001 - model text must never crash training
            return False, False
        if predicted is None:
            return False, False
        if _normalise(predicted) == _normalise(answer):
            return True, True
        gold = self._parse_gold(answer)
        try:
            with _time_limit(self.timeout_s):
                target = parse(_as_latex(predicted), parsing_timeout=None)
                if not target:
                    return False, False
                return bool(gold) and bool(verify(gold, target, timeout_seconds=None)), True
        except (_Timeout, Exception):  # a timeout or a parser crash is a verifier miss
            return False, False

    def _parse_gold(self, answer: str) -> list:
        if answer not in self._gold_cache:
            if len(self._gold_cache) >= _GOLD_CACHE_SIZE:
                self._gold_cache.clear()
            try:
                with _time_limit(self.timeout_s):
                    gold = parse(_as_latex(answer), parsing_timeout=None)
            except (_Timeout, Exception):
                gold = []  # cached too: an unparseable reference should not cost a timeout per rollout
            self._gold_cache[answer] = gold
        return self._gold_cache[answer]
