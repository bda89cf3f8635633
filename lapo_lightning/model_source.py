"""Where a model name points: a hub id, a local folder, or a model this project builds itself.

``PolicyConfig.model`` (and the evaluation's model specs) go through :func:`resolve` before
``from_pretrained``. Two kinds of names are turned into folders once and cached, so they then
load through exactly the path a hub id takes:

- ``tiny:<arch>...``: a tiny random-init model built by code (:mod:`lapo_lightning.tiny`),
  for the demo, the debug configs and tests.
- ``gguf:<name or file>``: a real pretrained model converted from a GGUF file
  (:mod:`lapo_lightning.gguf`), e.g. ``gguf:smollm2-135m-instruct`` from a PyPI wheel.

Everything else passes through unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

TINY_PREFIX = "tiny:"
GGUF_PREFIX = "gguf:"


def resolve(name: str) -> str:
    """A ``from_pretrained`` id or folder for any model name the project accepts."""
    if name.startswith(TINY_PREFIX):
        from lapo_lightning.tiny import resolve_model

        return resolve_model(name)
    if name.startswith(GGUF_PREFIX):
        from lapo_lightning.gguf import resolve_gguf

        return resolve_gguf(name)
    return name


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
