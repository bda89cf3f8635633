"""A corrupt adapter file: ``lapo answer`` (lapo_lightning/inference.py ``load``) and
``lapo eval`` (lapo_lightning/evaluation/models.py ``check_models``) refuse a truncated or
garbled ``adapter_model.safetensors`` with one line naming the file, before any weights load,
instead of a bare safetensors header error from peft. Both reuse ``adapter_files.safetensors_problem``.

Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_corrupt_adapter.py -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lapo_lightning import inference
from lapo_lightning.cli.main import main as lapo
from lapo_lightning.evaluation.models import ModelSpec, check_models

REEXPORT = "; re-export the adapter (or restore it from a checkpoint)"


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory) -> Path:
    """A real LoRA adapter for tiny:llama, as training exports it (peft ``save_pretrained``)."""
    from lapo_lightning.policy import PolicyConfig, load_policy

    folder = tmp_path_factory.mktemp("adapters") / "good"
    policy, _ = load_policy(PolicyConfig(model="tiny:llama"))
    policy.save_pretrained(folder)
    return folder


def truncate(file: Path) -> None:
    """What a full disk or a kill during a plain write leaves: the first half of the file."""
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def garble_header(file: Path) -> None:
    """The 8-byte header length intact, the JSON header after it overwritten."""
    data = bytearray(file.read_bytes())
    data[8:40] = b"#" * 32
    file.write_bytes(bytes(data))


@pytest.fixture(params=[truncate, garble_header], ids=["truncated", "garbage_header"])
def corrupt_adapter(request, saved_adapter, tmp_path) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(saved_adapter, folder)
    request.param(folder / "adapter_model.safetensors")
    return folder


@pytest.fixture
def no_weights(monkeypatch):
    """Fail if ``lapo answer`` gets as far as loading weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights loaded before the adapter file was checked")

    monkeypatch.setattr(inference, "load_policy", refuse)


def test_lapo_answer_names_the_corrupt_file(corrupt_adapter, no_weights):
    weights = corrupt_adapter / "adapter_model.safetensors"
    with pytest.raises(inference.InferenceError) as err:
        inference.load(str(corrupt_adapter))
    message = str(err.value)
    assert message.startswith(f"--adapter: {weights} is not a readable safetensors file ("), message
    assert message.endswith(REEXPORT) and "\n" not in message, message


def test_lapo_answer_command_prints_one_line_and_exits_2(corrupt_adapter, no_weights, capsys):
    with pytest.raises(SystemExit) as exit_:
        lapo(["answer", "--adapter", str(corrupt_adapter), "What is 2 + 3?"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --adapter: {corrupt_adapter / 'adapter_model.safetensors'} is not a readable safetensors file ("), err


def test_lapo_eval_check_names_the_corrupt_file(corrupt_adapter):
    errors = check_models([ModelSpec("trained", "tiny:llama", adapter=str(corrupt_adapter))])
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"model.models[0] (trained).adapter: {corrupt_adapter / 'adapter_model.safetensors'}"
                                " is not a readable safetensors file ("), errors
    assert errors[0].endswith(REEXPORT), errors


def test_an_intact_adapter_passes_both_checks(saved_adapter):
    assert check_models([ModelSpec("trained", "tiny:llama", adapter=str(saved_adapter))]) == []
    inference.check_adapter_weights(str(saved_adapter))  # no error
