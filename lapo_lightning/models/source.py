"""Where a model name points: a hub id, a local folder, or a model this project builds itself.

``PolicyConfig.model`` (and the evaluation's model specs) go through :func:`resolve` before
``from_pretrained``. Two kinds of names are turned into folders once and cached, so they then
load through exactly the path a hub id takes:

- ``tiny:<arch>...``: a tiny random-init model built by code (:mod:`lapo_lightning.models.tiny`),
  for the demo, the debug configs and tests.
- ``gguf:<name or file>``: a real pretrained model converted from a GGUF file
  (:mod:`lapo_lightning.models.gguf`), e.g. ``gguf:smollm2-135m-instruct`` from a PyPI wheel.

Everything else is a local folder or a hub id. A name that looks like a path (starts with
``.``, ``/`` or ``~``, or holds a path separator that is not a hub ``org/name``) must be an
existing folder: :func:`resolve` says so in one line instead of transformers' "Repo id must be in
the form ...". :func:`availability_problem` (the start-up check) also catches a hub id that is
not in the local cache while ``HF_HUB_OFFLINE=1`` forbids downloading it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lapo_lightning.models.cache import GGUF_PREFIX, TINY_PREFIX


class ModelNotFound(FileNotFoundError):
    """A model name that points nowhere; the message names the config key and what to do."""


def looks_like_path(name: str) -> bool:
    """True for names meant as local folders: ``./x``, ``../x``, ``/x``, ``~/x``, ``x/y/z``,
    ``C:\\x``; False for hub ids (``org/name``) and the ``tiny:``/``gguf:`` names.
    Example: ``looks_like_path("HuggingFaceTB/SmolLM2-135M")`` -> False; ``looks_like_path("runs/a/b")`` -> True.
    """
    if name.startswith((TINY_PREFIX, GGUF_PREFIX)):
        return False
    if name.startswith((".", "/", "~")) or "\\" in name or (os.altsep and os.altsep in name):
        return True
    return name.count("/") > 1  # a hub id has exactly one: org/name


def folder_problem(name: str, key: str = "model.policy.model") -> str | None:
    """One line when ``name`` looks like a local folder that does not exist (else None)."""
    if not looks_like_path(name):
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    found = "a file, not a folder" if path.exists() else "nothing"
    return (f"{key}: folder {name} does not exist (found {found} there; a local model is a folder with config.json, "
            "e.g. from save_pretrained)")


def offline_problem(name: str, key: str = "model.policy.model") -> str | None:
    """One line when ``name`` is a hub id that cannot load because ``HF_HUB_OFFLINE`` is set and
    the local Hugging Face cache has no copy of it (else None; nothing is downloaded here)."""
    if looks_like_path(name) or name.startswith((TINY_PREFIX, GGUF_PREFIX)) or Path(name).expanduser().is_dir():
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return None
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub would reject: not in the cache either
        cached = None
    if isinstance(cached, str):
        return None
    return (f"{key}: {name!r} is not a local folder, so a Hugging Face hub id, and it is not in the local cache "
            f"({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1 forbids downloading it; download it once online "
            f"(`hf download {name}`), unset HF_HUB_OFFLINE, or point {key} at a local folder")


def availability_problem(name: str, key: str = "model.policy.model") -> str | None:
    """Why ``name`` cannot load, as one line naming ``key`` (None = it may): a missing local
    folder, or a hub id that is neither cached nor downloadable offline. Reads no weights."""
    return folder_problem(name, key) or offline_problem(name, key)


def resolve(name: str, key: str = "model.policy.model") -> str:
    """A ``from_pretrained`` id or folder for any model name the project accepts.

    Raises :class:`ModelNotFound` naming ``key`` for a path-like name with no folder there.
    """
    if (problem := folder_problem(name, key)) is not None:
        raise ModelNotFound(problem)
    if name.startswith(TINY_PREFIX):
        from lapo_lightning.models.tiny import resolve_model

        return resolve_model(name)
    if name.startswith(GGUF_PREFIX):
        from lapo_lightning.models.gguf import resolve_gguf

        return resolve_gguf(name)
    return name
