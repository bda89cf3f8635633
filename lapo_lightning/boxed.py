"""The last ``\\boxed{...}`` of a text: how a final answer is written in MATH-style solutions.

Used on both sides of training: ``verify.py`` reads a completion's final answer with it, and
``problem_sets/sources.py`` takes a training row's answer from its solution column (e.g. MATH, whose
rows have a worked ``solution`` and no separate answer). Pure string code, no dependencies.
"""

from __future__ import annotations

import re

BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    Escaped braces (``\\{``, ``\\}``) do not count. If the last box is never closed (a
    completion cut off by the token cap) the result is None, not an earlier box: the
    model's final answer is missing.

    Example: ``extract_boxed(r"so \\boxed{1} ... \\boxed{\\frac{1}{2}}.")`` -> ``r"\\frac{1}{2}"``.
    """
    opens = list(BOX_OPEN.finditer(text))
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
