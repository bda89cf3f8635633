"""Packaging: the conda environment lists the same dependencies as pyproject.toml, the
``lapo`` script points at the CLI, and nothing shipped refers to the team's shared folder.

Run: pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_names(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", line)
        if match:
            out[match.group(1).lower().replace("_", "-")] = (match.group(2) or "") + match.group(3).strip()
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(env_lines) if line.strip() == "- pip:")
    pip_lines = [line.strip()[2:] for line in env_lines[start + 1:] if line.strip().startswith("- ")]
    listed = requirement_names([line for line in pip_lines if not line.startswith("-e")])
    assert listed == wanted


def test_console_script_exits_zero_on_success(monkeypatch):
    """A console script's return value is its exit status: returning the CLI object made a
    successful `lapo fit` exit 1 and broke `lapo fit ... && lapo fit ...` chains."""
    import lapo_lightning.cli as cli

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["lapo"] == "lapo_lightning.cli:run"
    monkeypatch.setattr(cli, "main", lambda args=None: object())
    assert cli.run() is None


def test_nothing_tracked_refers_to_the_shared_folder():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    needles = ("../" + "shared", "/work/" + "shared")  # split so this file does not match itself
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".yaml", ".yml", ".toml", ".md", ".cfg", ""} and path.is_file():
            text = path.read_text(errors="ignore")
            if any(needle in text for needle in needles):
                offenders.append(name)
    assert offenders == [], offenders
