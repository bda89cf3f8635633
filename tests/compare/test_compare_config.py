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
    used = {p.config for name in ("demo", "demo_all", "real", "smollm2")
            for p in load_config(f"configs/compare/{name}.yaml").phases if p.command == "eval"}
    assert used == {p.relative_to(ROOT) for p in (ROOT / "configs/compare").rglob("eval*.yaml")}


@pytest.mark.parametrize("name", ["demo.yaml", "demo_all.yaml", "real.yaml", "smollm2.yaml"])
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


def test_the_smollm2_comparison_trains_every_method_of_its_folder_and_smokes_small(monkeypatch):
    """configs/compare/smollm2.yaml: every config of its folder is a phase, and --smoke keeps the
    real model's phases to one step of two problems and a 16-token cap (its CI test stays short)."""
    monkeypatch.chdir(ROOT)
    config = load_config("configs/compare/smollm2.yaml")
    assert {p.config.name for p in config.phases} == {p.name for p in (ROOT / "configs/compare/smollm2").glob("*.yaml")}
    for phase in config.phases:
        smoke = dict(zip(phase.smoke[::2], phase.smoke[1::2]))
        assert smoke["--model.generation.max_new_tokens"] == "16", phase.name
        if phase.command == "fit":
            assert smoke["--trainer.max_steps"] == "1" and int(smoke["--data.max_problems"]) <= 2, phase.name
        else:
            assert int(smoke["--data.max_problems"]) <= 8, phase.name


def test_smollm2_method_configs_differ_from_lapo_stage1_only_in_the_method():
    folder = ROOT / "configs/compare/smollm2"
    shared = _shared_settings(folder / "stage1.yaml")
    assert {"model", "data", "trainer"} <= set(shared)
    for name in ("acc_only.yaml", "kimi.yaml"):
        assert _shared_settings(folder / name) == shared, name
    stage2 = yaml.safe_load((folder / "stage2.yaml").read_text())  # continues stage 1 on its problems
    stage1 = yaml.safe_load((folder / "stage1.yaml").read_text())
    assert stage2["data"] == stage1["data"] and stage2["model"]["optim"] == stage1["model"]["optim"]
    assert stage2["model"]["policy"]["adapter"] == stage1["export"]["dirpath"]


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
