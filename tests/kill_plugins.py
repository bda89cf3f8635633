"""``kill -9`` at a chosen moment of a ``lapo fit`` subprocess, for tests/test_resume.py.

:class:`KillPoint` is a callback the test configs always load (by class_path); it does nothing
unless the environment variable ``LAPO_KILL`` names a moment, so the killed run and its resume
use one config. Moments:

- ``sampling@K``: inside the rollout sampler at optimizer step K (after the completions exist);
- ``optimizer@K``: inside step K's optimizer step, after the weights changed in memory;
- ``write@NAME``: while an artefact named NAME is written: its temp file (or folder) is complete
  but not yet renamed into place (``last.ckpt``, ``epoch=0-step=6.ckpt``, ``length_table.json``,
  ``adapter``), the worst moment for an atomic write.

The kill is SIGKILL of the whole process group (the test starts each run in its own session).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl


def kill() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


class KillPoint(pl.Callback):
    def __init__(self) -> None:
        moment = os.environ.get("LAPO_KILL", "")
        self.kind, _, self.arg = moment.partition("@")
        if self.kind == "write":
            self._patch_renames(self.arg)

    @staticmethod
    def _patch_renames(name: str) -> None:
        for attr in ("replace", "rename"):
            real = getattr(os, attr)

            def renaming(src, dst, *args, _real=real, **kwargs):
                if Path(dst).name == name and ".tmp-" in Path(src).name:
                    kill()
                return _real(src, dst, *args, **kwargs)

            setattr(os, attr, renaming)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.kind == "sampling":
            sampler, step = pl_module.sampler, int(self.arg)
            real = sampler.sample

            def sample(*args, **kwargs):
                out = real(*args, **kwargs)
                if trainer.global_step == step:
                    kill()
                return out

            sampler.sample = sample
        elif self.kind == "optimizer":
            step = int(self.arg)
            for optimizer in trainer.optimizers:
                optimizer.register_step_post_hook(lambda *_: kill() if trainer.global_step == step else None)
