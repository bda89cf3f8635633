"""Shared fixtures: tiny models built offline, and environment for hub-free runs.

Run the suite with ``pytest -q`` (one process; no downloads). Tiny models are built once
per session into a temp cache by ``lapo_lightning.tiny`` and loaded through
``from_pretrained``, exactly as a hub id would be.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Point ``tiny:`` model builds at a per-session folder (never the user's cache)."""
    folder = tmp_path_factory.mktemp("tiny_models")
    old = os.environ.get("LAPO_CACHE")
    os.environ["LAPO_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("LAPO_CACHE", None)
    else:
        os.environ["LAPO_CACHE"] = old
