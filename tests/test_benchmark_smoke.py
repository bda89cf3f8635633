"""The TRL comparison benchmark runs end to end at tiny sizes, so it cannot rot.

Not a timing test: it checks that every system's worker runs one step and the table
prints. Run: pytest tests/test_benchmark_smoke.py -q
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_benchmark_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/trl_compare.py", "--smoke", "--workloads", "varied", "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    systems = {"floor", "lapo"} | ({"trl"} if importlib.util.find_spec("trl") else set())
    for system in systems:
        assert f"| varied | {system} |" in out.stdout
    assert (tmp_path / "r.json").stat().st_size > 0
