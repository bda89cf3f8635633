"""Shared fixtures: tiny models built offline, and environment for hub-free runs.

Run the suite with ``pytest -q`` (one process; no downloads). Tiny models are built once
per session into a temp cache by ``lapo_lightning.models.tiny`` and loaded through
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


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory):
    """Point Hugging Face ``datasets``' cache at a per-session folder (never the user's): data
    recipes, such as the one configs/stage1.yaml trains on, read their sources through
    ``load_dataset``, which caches what it converts. ``datasets`` reads HF_DATASETS_CACHE when it
    is imported and ``load_dataset`` reads ``datasets.config.HF_DATASETS_CACHE`` at each call, so
    both are set (subprocesses inherit the variable)."""
    import datasets.config

    folder = tmp_path_factory.mktemp("hf_datasets")
    old_env, old_config = os.environ.get("HF_DATASETS_CACHE"), datasets.config.HF_DATASETS_CACHE
    os.environ["HF_DATASETS_CACHE"] = str(folder)
    datasets.config.HF_DATASETS_CACHE = folder
    yield folder
    datasets.config.HF_DATASETS_CACHE = old_config
    if old_env is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = old_env
