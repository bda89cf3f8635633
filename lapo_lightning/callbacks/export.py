"""Export the trained adapter in PEFT format when fit ends (and optionally a merged model).

The prompt template is recorded beside it (``lapo_prompt.json``), so ``lapo answer`` asks
questions the way training did, and so is the optimizer step it was exported at and whether
its run completed (``lapo_export.json``), so that a later run never replaces it with less. A module that trains every weight (``SFTModule`` with ``full_finetune``) exports the whole
model instead, as a ``from_pretrained`` folder.

The folder is written whole or not at all: weights, tokenizer files and ``lapo_prompt.json``
go into a temp folder beside it that is then renamed into place (``atomic.folder_in_place``),
replacing an older export only once the new one is complete. Weights holding NaN/inf are
refused before anything is written (``health.nonfinite_parameters``). At start-up the folder's
parent is checked for writability (a bad ``export.dirpath`` fails in seconds, not after the
last step) and temp folders of a killed export are removed.

The ``lapo`` CLI always adds this callback (``export.*`` in YAML). Default folder:
``<trainer.log_dir>/adapter`` (and ``<trainer.log_dir>/merged``), which is what the
stage-2 config and the inference helper point at.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lapo_lightning.safety.atomic import check_writable_folder, clean_stale, folder_in_place
from lapo_lightning.safety.health import NonFiniteWeightsError, nonfinite_parameters, nonfinite_weights_message
from lapo_lightning.policy import export_merged, save_trained
from lapo_lightning.prompts import save_prompt

RECORD = "lapo_export.json"


def write_record(folder: Path, step: int, complete: bool) -> None:
    """What ``ExportAdapter`` leaves beside the adapter: the step and whether the run completed."""
    (folder / RECORD).write_text(json.dumps({"step": step, "complete": complete}) + "\n", encoding="utf-8")


def export_state(folder: Path) -> tuple[int | None, bool] | None:
    """(step, complete) of an adapter export in ``folder``; None when there is none."""
    if not (folder / "adapter_config.json").is_file() and not (folder / RECORD).is_file():
        return None
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        return int(record["step"]), bool(record["complete"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, True


class ExportAdapter(pl.Callback):
    """Save the policy's LoRA adapter (and tokenizer) at the end of ``fit``.

    Args:
        dirpath: output folder; default ``<log_dir>/adapter``.
        merged: also write a full model with the adapter merged in (``<dirpath>/../merged``).
        overwrite: let this run replace a finished adapter or length table with less (fewer
            steps, or a fresh run over a completed one); off, ``lapo fit`` refuses to start
            (``lapo_lightning/safety/finished_results.py``).
    """

    def __init__(self, dirpath: str | None = None, merged: bool = False, overwrite: bool = False) -> None:
        self.dirpath = dirpath
        self.merged = merged
        self.overwrite = overwrite

    def resolve(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir) / "adapter"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        out = self.resolve(trainer)
        clean_stale(out.parent)
        check_writable_folder(out.parent, "export folder (export.dirpath)")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or pl_module.policy is None:
            return
        out = self.resolve(trainer)
        bad = nonfinite_parameters((n, p) for n, p in pl_module.policy.named_parameters() if p.requires_grad)
        if bad:
            raise NonFiniteWeightsError(nonfinite_weights_message(bad, f"adapter {out}"))
        with folder_in_place(out, "exported adapter") as tmp:
            save_trained(pl_module.policy, pl_module.tokenizer, tmp)
            if getattr(pl_module, "prompt", None) is not None:  # `lapo answer` renders questions the same way
                save_prompt(pl_module.prompt, tmp)
            write_record(tmp, trainer.global_step, complete=not trainer.interrupted)
        rank_zero_info(f"trained weights saved to {out}")
        if self.merged:
            with folder_in_place(out.parent / "merged", "merged model") as tmp:
                export_merged(pl_module.policy_config, out, tmp)
            rank_zero_info(f"merged model saved to {out.parent / 'merged'}")
