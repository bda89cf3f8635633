"""Atomic artefacts without a model: files and folders written whole or not at all
(``lapo_lightning.safety.atomic``), leftovers of killed writes cleaned at the next start, and the
adapter export (``ExportAdapter``) that publishes a complete folder, replaces an old one safely,
refuses NaN/inf weights and an unusable folder at start-up.

Run: pytest tests/test_atomic.py -q (seconds, mostly imports).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lapo_lightning.safety import atomic
from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.safety.health import NonFiniteWeightsError


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------- files
def test_write_file_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    atomic.write_file(path, lambda f: f.write(b"one"))
    atomic.write_file(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two" and [p.name for p in path.parent.iterdir()] == ["a.bin"]


def test_write_file_failure_keeps_the_old_content(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_file(path, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_file(path, crash)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


# --------------------------------------------------------------------------------- folders
def test_folder_in_place_replaces_an_old_folder_only_when_complete(tmp_path):
    out = tmp_path / "adapter"
    with atomic.folder_in_place(out) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic.folder_in_place(out) as tmp:
            (tmp / "weights").write_text("v2")
            raise RuntimeError("killed before the tokenizer files")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"] and (out / "weights").read_text() == "v1"
    with atomic.folder_in_place(out) as tmp:
        (tmp / "weights").write_text("v3")
        (tmp / "tokenizer.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "weights"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_clean_stale_removes_dead_writers_temps_and_restores_an_old_folder(tmp_path):
    pid = dead_pid()
    (tmp_path / f".last.ckpt.tmp-{pid}").write_bytes(b"half")
    (tmp_path / f".adapter.tmp-{pid}").mkdir()
    (tmp_path / f".merged.old-{pid}").mkdir()  # killed between moving it aside and renaming the new one in
    (tmp_path / f".merged.old-{pid}" / "w").write_text("old")
    (tmp_path / f".table.json.tmp-{1}").write_bytes(b"")  # pid 1 is alive: someone else's write
    (tmp_path / "notes.tmp-3").write_text("not ours: no leading dot")
    removed = atomic.clean_stale(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".table.json.tmp-1", "merged", "notes.tmp-3"]
    assert (tmp_path / "merged" / "w").read_text() == "old"


def test_check_writable_folder_creates_nothing_and_names_a_blocking_file(tmp_path):
    atomic.check_writable_folder(tmp_path / "a" / "b", "export folder")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(atomic.ArtefactWriteError, match=f"cannot write the export folder {tmp_path}/f/x: "
                                                        f"{tmp_path}/f is a file, not a folder"):
        atomic.check_writable_folder(tmp_path / "f" / "x", "export folder")


# ---------------------------------------------------------------------------------- export
class FakePolicy(torch.nn.Module):
    """A trained model with ``save_pretrained`` (the export only needs that)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.lora = torch.nn.Parameter(torch.full((2,), value))

    def save_pretrained(self, folder) -> None:
        (Path(folder) / "adapter_model.bin").write_text(json.dumps(self.lora.tolist()))


class FakeTokenizer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_pretrained(self, folder) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        (Path(folder) / "tokenizer.json").write_text("{}")


def export(tmp_path, value: float, tokenizer: FakeTokenizer | None = None) -> Path:
    out = tmp_path / "run" / "adapter"
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path), default_root_dir=str(tmp_path),
                              global_step=7, interrupted=False)
    module = SimpleNamespace(policy=FakePolicy(value), tokenizer=tokenizer or FakeTokenizer(), prompt=None)
    ExportAdapter(dirpath=str(out)).on_fit_end(trainer, module)
    return out


def test_export_replaces_an_old_adapter_whole_or_not_at_all(tmp_path):
    out = export(tmp_path, 1.0)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_model.bin", "lapo_export.json", "tokenizer.json"]
    with pytest.raises(atomic.ArtefactWriteError, match=f"cannot write the exported adapter {out}: No space left"):
        export(tmp_path, 2.0, FakeTokenizer(fail=True))  # weights written, tokenizer not: nothing published
    assert json.loads((out / "adapter_model.bin").read_text()) == [1.0, 1.0]
    assert [p.name for p in out.parent.iterdir()] == ["adapter"]
    export(tmp_path, 3.0)
    assert json.loads((out / "adapter_model.bin").read_text()) == [3.0, 3.0]


def test_export_refuses_non_finite_weights_naming_the_parameter(tmp_path):
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to write the adapter .*adapter: trainable weight 'lora'"):
        export(tmp_path, float("nan"))
    assert not (tmp_path / "run").exists()


def test_export_setup_fails_fast_on_an_unusable_folder_and_cleans_leftovers(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path), default_root_dir=str(tmp_path))
    with pytest.raises(atomic.ArtefactWriteError, match="cannot write the export folder"):
        ExportAdapter(dirpath=str(blocker / "adapter")).setup(trainer, None, "fit")
    leftover = tmp_path / f".adapter.tmp-{dead_pid()}"
    leftover.mkdir()
    ExportAdapter(dirpath=str(tmp_path / "adapter")).setup(trainer, None, "fit")
    assert not leftover.exists()
