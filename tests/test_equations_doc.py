"""docs/equations.md cannot rot: every "Eq. N" / "Eqs. N-M" cited in the code, configs and docs is
one of its rows, and every function, plugin and test it names exists.

Run: pytest tests/test_equations_doc.py -q
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import lapo_lightning.callbacks as callbacks
import lapo_lightning.rewards as rewards

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "equations.md"
SEARCHED = ["lapo_lightning", "configs", "docs", "tests", "examples", "benchmarks", "README.md"]
CITATION = re.compile(r"\bEqs?\.\s*(\d+)(?:\s*(?:-|–|to)\s*(\d+))?")
ROW = re.compile(r"^\|\s*(\d+)\s*\|", re.M)


def documented() -> set[int]:
    return {int(n) for n in ROW.findall(DOC.read_text(encoding="utf-8"))}


def cited() -> dict[int, list[str]]:
    """Equation number -> where it is cited (path:line)."""
    where: dict[int, list[str]] = {}
    for entry in SEARCHED:
        base = ROOT / entry
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.suffix in {".py", ".md", ".yaml", ".sh"}]
        for path in files:
            if path == DOC or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for m in CITATION.finditer(text):
                first, last = int(m.group(1)), int(m.group(2) or m.group(1))
                line = text.count("\n", 0, m.start()) + 1
                for n in range(first, last + 1):
                    where.setdefault(n, []).append(f"{path.relative_to(ROOT)}:{line}")
    return where


def test_the_doc_numbers_the_papers_eight_equations():
    assert documented() == set(range(1, 9))


def test_every_cited_equation_is_in_the_doc():
    rows = documented()
    missing = {n: places for n, places in cited().items() if n not in rows}
    assert not missing, f"cited but not in docs/equations.md: {missing}"


def test_every_function_named_in_the_doc_exists():
    text = DOC.read_text(encoding="utf-8")
    names = re.findall(r"`(lapo_lightning(?:\.\w+)+):(\w+)`", text)
    assert len(names) >= 10
    for module, attr in names:
        assert hasattr(importlib.import_module(module), attr), f"{module}:{attr}"


def test_every_plugin_named_in_the_doc_exists():
    text = DOC.read_text(encoding="utf-8")
    plugins = set(re.findall(r"`(\w+)`(?:\(weight=[\d.]+\))? \((?:reward|rewards|callback)", text))
    assert {"LengthBand", "BudgetGaussian", "LengthStatsCollector", "BudgetTargets"} <= plugins
    for name in plugins:
        assert hasattr(rewards, name) or hasattr(callbacks, name), name


def test_every_test_named_in_the_doc_exists():
    text = DOC.read_text(encoding="utf-8")
    tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(tests) >= 10
    for path, name in tests:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name}"


def test_the_citation_pattern_reads_ranges():
    assert [m.groups() for m in CITATION.finditer("paper Eqs. 1-5 and Eq. 8")] == [("1", "5"), ("8", None)]
