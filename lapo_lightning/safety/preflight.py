"""``lapo fit``'s start-up check: everything that can be checked without the model's weights, in one pass.

Flow: ``cli.fit.LapoCLI`` parses the YAML and command line (jsonargparse), then calls
:func:`check` on the parsed config *before* ``instantiate_classes``; if it returns anything,
the command prints one line per problem, each naming its config key or file and line, and
exits with status 2. Nothing here loads weights, so a typo costs seconds, not a model load.

What is checked, in order (every stage runs, so all problems come out together):

1. settings: each plugin and settings dataclass is built on its own from the parsed values
   (``model.grpo``, ``model.rewards[1]``, ``trainer.callbacks[0]``, ...), so each one's own
   checks (``__post_init__``, ``__init__``) report under its key; then the training rules
   that span sections (``config.training_problems``: temperature 0, tiny generation caps,
   negative reward weights, KL without a reference, micro-batch divisibility).
2. inputs (``lapo fit`` only; configs may name files a previous stage writes): the data
   files (every bad line), the model name (a missing local folder, a hub id not cached while
   offline), adapters (folder, ``adapter_config.json``, a readable safetensors header, shapes
   that fit the base), stage-2 length tables (exist and parse), and every output location
   (checkpoint folder, export folder, root dir, logger dir, length-table paths) writable.
3. context: once the model's config and tokenizer are read (no weights), every training
   prompt plus ``model.generation.max_new_tokens`` must fit ``max_position_embeddings``.

Stage 1 lives in ``preflight_settings.py``, stages 2 and 3 in ``preflight_inputs.py``; this
module runs them in order and prints the result. The objects built are thrown away: jsonargparse builds the real ones right after, so
constructors must stay cheap (every class in this project loads weights in
``configure_model``, never in ``__init__``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonargparse import Namespace

from lapo_lightning.safety.preflight_inputs import check_inputs
from lapo_lightning.safety.preflight_settings import Built, check_settings

__all__ = ["Built", "check", "check_inputs", "check_settings", "dedupe", "report"]


def check(cfg: Namespace, inputs: bool = True) -> list[str]:
    """Every problem found in a parsed ``lapo fit`` config (the ``fit`` section), one line each.

    ``inputs=False`` checks the settings only (no files, no model config): what a config that
    names the outputs of an earlier stage can be held to before that stage has run.
    """
    built = Built()
    problems = check_settings(cfg, built)
    if inputs:
        problems += check_inputs(cfg, built)
    return dedupe(problems)


def dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    return [ln for ln in lines if not (ln in seen or seen.add(ln))]


def report(problems: list[str], write: Callable[[str], Any], command: str = "lapo fit") -> None:
    """Print the problems: a count, then one line each."""
    s = "" if len(problems) == 1 else "s"
    write(f"{command}: {len(problems)} problem{s} found before loading any weights:\n")
    for line in problems:
        write(f"  {line}\n")
