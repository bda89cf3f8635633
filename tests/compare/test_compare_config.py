"""`lapo compare` config checks (lapo_lightning/compare/run.py) and the shipped comparison configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lapo_lightning.compare.run import CompareConfigError, load_config, main
from lapo_lightning.cli.phases import EVAL_SMOKE, RL_SMOKE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "demo_all.yaml", "real.yaml"])
def test_shipped_comparisons_load_and_every_method_config_is_used(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(f"configs/compare/{name}")
    fits = [p for p in config.phases if p.command == "fit"]
    if name != "real.yaml":  # the demo comparisons start from the demo's SFT model
        assert fits[0].name == "sft" and fits[0].smoke == ("--trainer.max_steps", "3")
        fits = fits[1:]
    assert fits and all(p.smoke == RL_SMOKE for p in fits)
    assert [p.output() for p in config.phases if p.command == "eval"] == config.reports and config.reports
    assert all(p.smoke == EVAL_SMOKE for p in config.phases if p.command == "eval")
    if name != "demo.yaml":  # demo_all.yaml and real.yaml train every method of their folder
        folder = ROOT / "configs/compare" / ("demo" if name == "demo_all.yaml" else "real")
        methods = {p.name for p in folder.glob("*.yaml") if not p.name.startswith("eval")}
        assert methods <= {p.config.name for p in fits}, "a method config that no comparison runs"


def test_every_shipped_evaluation_config_is_run_by_a_comparison(monkeypatch):
    monkeypatch.chdir(ROOT)
    used = {p.config for name in ("demo", "demo_all", "real")
            for p in load_config(f"configs/compare/{name}.yaml").phases if p.command == "eval"}
    assert used == {p.relative_to(ROOT) for p in (ROOT / "configs/compare").rglob("eval*.yaml")}


@pytest.mark.parametrize("name", ["demo.yaml", "demo_all.yaml", "real.yaml"])
def test_every_evaluated_adapter_is_trained_by_an_earlier_phase(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(f"configs/compare/{name}")
    exported, base = set(), None
    for phase in config.phases:
        if phase.command == "fit":
            exported.add(str(phase.output()))
            continue
        for m in yaml.safe_load(phase.config.read_text())["model"]["models"]:
            assert m.get("adapter", m["model"]) in exported | {m["model"]}, (phase.name, m)
            assert base in (None, m["model"]), "every model of a comparison shares one base"
            base = m["model"]


def _write(tmp_path, text):
    path = tmp_path / "cmp.yaml"
    path.write_text(text)
    return path


def test_every_problem_is_named_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = _write(tmp_path, """
report_dir: 3
colour: red
phases:
  - {name: a, config: configs/compare/demo/kimi.yaml, speed: 2}
  - {name: a, command: train, config: configs/compare/demo/kimi.yaml}
  - {name: b, config: configs/compare/demo/missing.yaml}
  - {name: c, config: configs/compare/demo/kimi.yaml, smoke: "--trainer.max_steps 1"}
""")
    with pytest.raises(CompareConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: unknown key 'colour' (allowed: title, report_dir, notes, phases)",
        f"{path}: report_dir: expected a folder path, got 3",
        f"{path}: phases[0]: unknown key 'speed' (allowed: name, command, config, what, smoke)",
        f"{path}: phases[1].name: 'a' is used by an earlier phase",
        f"{path}: phases[1].command: expected one of fit, eval, got 'train'",
        f"{path}: phases[2].config: no such file 'configs/compare/demo/missing.yaml' (paths are relative to the "
        "folder you run lapo compare from, normally the repository root)",
        f"{path}: phases[3].smoke: expected a list of command-line arguments (strings), got '--trainer.max_steps 1'",
        f"{path}: phases: no phase has command: eval, so there would be nothing to compare",
    ]


def test_a_phase_config_without_its_output_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fit.yaml").write_text("model: {}\n")
    path = _write(tmp_path, "report_dir: r\nphases:\n  - {name: x, config: fit.yaml}\n"
                            "  - {name: e, command: eval, config: fit.yaml}\n")
    with pytest.raises(CompareConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: phases[0].config: fit.yaml: phase 'x' needs export.dirpath (where its output and finished-marker go)",
        f"{path}: phases[1].config: fit.yaml: phase 'e' needs model.report_dir (where its output and finished-marker "
        "go)"]


def test_cli_exits_2_with_one_line_per_problem(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"lapo compare: the config has problems:\n  {tmp_path / 'none.yaml'}: no such comparison config " \
                  "(run from the repository root, or pass --config)\n"
    path = _write(tmp_path, "[1, 2]\n")
    assert main(["--config", str(path)]) == 2
    assert "expected a mapping with report_dir and phases" in capsys.readouterr().err


# What a method config may change from the config it is compared against: its reward, its
# callbacks, its prompt and where it writes. Anything else (learning rate, steps, G, cap, data)
# would make the comparison unfair, so it must stay in step when the reference config changes.
METHOD_KEYS = {("model", "rewards"), ("model", "prompt"), ("trainer", "callbacks"), ("trainer", "default_root_dir"),
               ("trainer", "logger"), ("export",)}


def _shared_settings(path: Path, allowed=METHOD_KEYS) -> dict:
    config = yaml.safe_load(path.read_text())
    for key in allowed:
        section = config
        for part in key[:-1]:
            section = section.get(part, {})
        section.pop(key[-1], None)
    return config


@pytest.mark.parametrize("folder, reference", [("demo", "demo/acc_only.yaml"), ("real", "stage1.yaml")])
def test_method_configs_differ_from_their_reference_only_in_the_method(folder, reference):
    methods = sorted(p for p in (ROOT / "configs/compare" / folder).glob("*.yaml") if not p.name.startswith("eval"))
    assert len(methods) >= 7
    for path in methods:  # ThinkPrune's demo cap starts at its schedule's first cap
        allowed = METHOD_KEYS | ({("model", "generation", "max_new_tokens")} if path.stem == "thinkprune" else set())
        shared = _shared_settings(ROOT / "configs" / reference, allowed)
        assert {"model", "data", "trainer"} <= set(shared) and _shared_settings(path, allowed) == shared, path.name
