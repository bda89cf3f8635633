"""Answer extraction and equivalence checking: the only module that knows answer formats.

The GRPO module calls :class:`MathVerifier` right after sampling; it fills
``RolloutBatch.correct`` / ``parsed`` and every reward reads ``batch.correct`` from there.
Departs from the official LAPO scripts, which compare the *first* ``\\boxed{}`` by exact
string match (a regex that stops at the first ``}``, so ``\\boxed{\\frac{1}{2}}`` never
matches): we take the *last* balanced box and test equivalence with math-verify.
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

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# The one fallback when there is no box: "the answer is X" / "final answer: X" (last one).
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is\s*:?|:)\s*([^\n]+)", re.IGNORECASE)
_MAX_FALLBACK_CHARS = 200  # a longer "answer" is a sentence, not an answer
_GOLD_CACHE_SIZE = 100_000


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    Escaped braces (``\\{``, ``\\}``) do not count. If the last box is never closed (a
    completion cut off by the token cap) the result is None, not an earlier box: the
    model's final answer is missing.

    Example: ``extract_boxed(r"so \\boxed{1} ... \\boxed{\\frac{1}{2}}.")`` -> ``r"\\frac{1}{2}"``.
    """
    opens = list(_BOX_OPEN.finditer(text))
    if not opens:
        return None
    start = opens[-1].end()
    depth, i = 1, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def extract_answer(text: str, fallback: bool = True) -> str | None:
    """The final answer string of a completion, or None.

    1. :func:`extract_boxed`.
    2. Fallback (only when there is no ``\\boxed``/``\\fbox`` at all): the last "answer is X"
       / "answer: X" phrase after the last ``</think>`` (the whole text if there is none),
       X up to the end of its line, without ``$`` and a trailing period.

    Example: ``extract_answer("</think> The final answer is $3/4$.")`` -> ``"3/4"``.
    """
    if _BOX_OPEN.search(text):  # a box, even a broken one, rules out the fallback
        boxed = (extract_boxed(text) or "").strip()
        return boxed or None  # an empty box is no answer
    if not fallback:
        return None
    tail = text.rsplit("</think>", 1)[-1]
    matches = _ANSWER_PHRASE.findall(tail)
    if not matches:
        return None
    answer = matches[-1].strip()
    answer = re.split(r"\.\s", answer, maxsplit=1)[0]  # "5. Thanks!" -> "5" (keeps "3.5")
    answer = answer.strip().rstrip(".").strip().strip("$").strip()
    return answer if 0 < len(answer) <= _MAX_FALLBACK_CHARS else None


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


class Verifier:
    """Base class: judges ``texts[i]`` against ``answers[i]`` for N completions."""

    def __call__(self, texts: list[str], answers: list[str]) -> VerifyResult:
        raise NotImplementedError


class ContainsAnswer(Verifier):
    """Lenient check for smoke tests and toy tasks: correct when the reference answer occurs
    in the completion, not as part of a longer number ("7" is not found in "17" or "7.5").

    The debug configs use it so that a random-init model is sometimes right, which is
    what exercises the length statistics end to end. Every non-empty completion counts as
    parsed.
    """

    def __call__(self, texts: list[str], answers: list[str]) -> VerifyResult:
        if len(texts) != len(answers):
            raise ValueError(f"texts and answers differ in length: {len(texts)} vs {len(answers)}")
        found = [re.search(rf"(?<![\d.]){re.escape(a.strip())}(?!\.?\d)", t) is not None for t, a in zip(texts, answers)]
        return VerifyResult(correct=torch.tensor(found, dtype=torch.bool),
                            parsed=torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool))


class MathVerifier(Verifier):
    """Checks N completions against N reference answers; never raises on model text.

    Args:
        timeout_s: wall-clock limit for parsing plus comparing one completion (and for
            parsing one reference). Enforced with SIGALRM in the main thread only; off the
            main thread the check runs unguarded (math-verify's own timeout would raise
            there). Training calls it from ``training_step``, which runs in the main thread.
        fallback: also accept "the answer is X" when a completion has no ``\\boxed{}``.
    """

    def __init__(self, timeout_s: float = 5.0, fallback: bool = True) -> None:
        self.timeout_s = timeout_s
        self.fallback = fallback
        self._gold_cache: dict[str, list] = {}

    def __call__(self, texts: list[str], answers: list[str]) -> VerifyResult:
        """``texts[i]`` is judged against ``answers[i]`` (both [N] strings).

        Example: ``MathVerifier()(["\\boxed{0.5}", "no idea"], ["\\frac{1}{2}", "3"])``
        -> ``correct=[True, False]``, ``parsed=[True, False]``.
        """
        if len(texts) != len(answers):
            raise ValueError(f"texts and answers differ in length: {len(texts)} vs {len(answers)}")
        results = [self._check(text, answer) for text, answer in zip(texts, answers)]
        correct = torch.tensor([c for c, _ in results], dtype=torch.bool)  # [N]
        parsed = torch.tensor([p for _, p in results], dtype=torch.bool)  # [N]
        return VerifyResult(correct=correct, parsed=parsed)

    def _check(self, text: str, answer: str) -> tuple[bool, bool]:
        """(correct, parsed) for one completion."""
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
