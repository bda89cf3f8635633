"""``python -m lapo_lightning.cli ...`` is the ``lapo ...`` console script (same entry point)."""

from lapo_lightning.cli.main import run

run()
