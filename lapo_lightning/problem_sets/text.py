"""Problem text as a key: the normalised form behind deduplication, contamination checks and
the ids of rows that have none.

Flow: ``sources.py`` computes :func:`text_key` for every row it maps; ``mix.py``
compares those keys across sources (duplicates) and against the evaluation benchmarks
(contamination), and rows without an id get :func:`text_id`. The key depends on the text alone,
so the same problem gets the same id in every process, every resume and both stages.

Pure functions, standard library only.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata

_SPACE_OR_DOLLAR = re.compile(r"[\s$]+")
_LEVEL_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TEXT_ID_PREFIX = "q-"


def normalise(text: str) -> str:
    """The text two copies of one problem share: Unicode NFKC, case folded, with every
    whitespace character and ``$`` removed (LaTeX spacing and inline-math delimiters differ
    between copies of the same problem far more often than the problem itself).

    Example: ``normalise("Compute  $2 + 3$.\\n")`` -> ``"compute2+3."``.
    """
    return _SPACE_OR_DOLLAR.sub("", unicodedata.normalize("NFKC", text).casefold())


def text_key(text: str) -> str:
    """40 hex digits of SHA-1 over :func:`normalise` (UTF-8): equal for copies of one problem."""
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()


def text_id(key: str) -> str:
    """The id of a row that has none, from its :func:`text_key`: ``"q-"`` + its first 16 hex digits.

    Example: ``text_id(text_key("1+1?"))`` -> ``"q-…"`` (the same in any process or run).
    """
    return TEXT_ID_PREFIX + key[:16]


def level_value(value: object) -> float | None:
    """A level or difficulty as a number: ``3`` -> 3.0, ``"Level 3"`` -> 3.0 (MATH's form),
    ``2.5`` -> 2.5; None for a missing level (None, ``""``, ``"Level ?"``, NaN, true/false).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    found = _LEVEL_NUMBER.search(str(value))
    return float(found[0]) if found else None


def level_label(level: float | None) -> str:
    """How a level is printed: ``3.0`` -> ``"3"``, ``2.5`` -> ``"2.5"``, None -> ``"none"``."""
    if level is None or (isinstance(level, float) and math.isnan(level)):
        return "none"
    return str(int(level)) if float(level).is_integer() else f"{level:g}"
