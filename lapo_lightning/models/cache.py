"""The folder where models this project builds are kept, and building each one exactly once.

Below :mod:`lapo_lightning.models.source` (which resolves the ``tiny:`` and ``gguf:`` names) and
the builders it calls (:mod:`lapo_lightning.models.tiny`, :mod:`lapo_lightning.models.gguf`): both sides
import the name prefixes and the cache from here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

TINY_PREFIX = "tiny:"
GGUF_PREFIX = "gguf:"


def cache_root() -> Path:
    """``$LAPO_CACHE``, else ``~/.cache/lapo_lightning``: where built models are kept."""
    return Path(os.environ.get("LAPO_CACHE", Path.home() / ".cache" / "lapo_lightning"))


def build_once(folder: Path, build: Callable[[Path], object]) -> str:
    """``folder``, calling ``build(tmp)`` first if it holds no model yet.

    The build writes a temporary sibling that is renamed into place, so a reader (or another
    process building the same model) never sees half a folder. It runs with its own random
    state: a seeded build must not reseed the caller's generator, or the first run on an
    empty cache would start from other LoRA weights than every later run with the same seed.
    """
    if not (folder / "config.json").exists():
        import torch

        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with torch.random.fork_rng(devices=[]):
            build(tmp)
        os.makedirs(folder.parent, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race: its folder is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)
