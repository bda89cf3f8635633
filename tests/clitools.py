"""Helpers for tests that run the real ``lapo`` entry point on the shipped configs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lapo_lightning.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def training_configs() -> list[Path]:
    """Every shipped ``lapo fit`` config: configs/**/*.yaml except the ``lapo eval`` configs
    (eval*.yaml), the ``lapo compare`` phase lists (configs/compare/*.yaml) and the data recipes
    (configs/data/*.yaml, read by ``lapo data`` and through ``data.train_file``)."""
    return sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                  if not p.name.startswith("eval") and p.parent not in (ROOT / "configs" / "compare", ROOT / "configs" / "data"))


def config_in(tmp_path: Path, name: str, **replace: str) -> Path:
    """Copy ``configs/<name>`` into tmp_path with every ``runs/...`` output redirected there.

    ``replace`` maps extra literal snippets to their substitutes (e.g. a changed value).
    """
    text = (ROOT / "configs" / name).read_text()
    text = re.sub(r"\bruns\b", str(tmp_path / "runs"), text)
    for old, new in replace.items():
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / Path(name).name
    out.write_text(text)
    return out


def fit(config: Path, *extra: str):
    """``lapo fit --config <config> [extra...]``; returns the LightningCLI object."""
    return main(["fit", "--config", str(config), *extra])


def step_metrics(cli) -> list[dict]:
    """The per-step rows (those that logged ``length/mean``) of a finished fit's metrics.csv."""
    with open(Path(cli.trainer.log_dir) / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("length/mean")]
