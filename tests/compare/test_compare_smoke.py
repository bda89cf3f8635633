"""`lapo compare` end to end in smoke mode: every method config of configs/compare/demo_all.yaml
trains a few steps through the real trainer, every evaluation runs, the report lists every
model, and a re-run resumes instead of training again."""

from __future__ import annotations

import json

import pytest

from lapo_lightning.cli import phases
from lapo_lightning.compare.run import load_config, run_compare
from tests.clitools import ROOT, config_in

pytestmark = pytest.mark.slow
METHODS = ("acc-only", "lapo-stage1", "lapo-stage2", "kimi", "thinkprune", "efficient", "shorter-better", "dapo")
BUDGETED = ("l1-max", "l1-exact", "lapo-stage2")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """demo_all.yaml and every config it names copied into a temp folder (outputs redirected
    there, the SFT phase on a smaller model), run with --smoke."""
    tmp = tmp_path_factory.mktemp("compare")
    config = config_in(tmp, "compare/demo_all.yaml", **{"configs/demo/": f"{tmp}/", "configs/compare/demo/": f"{tmp}/"})
    for file in (ROOT / "configs/demo").glob("*.yaml"):
        config_in(tmp, f"demo/{file.name}", **({"tiny:llama-h128-l4-n": "tiny:llama-h64-l2-n"}
                                                if file.name == "sft.yaml" else {}))
    for file in (ROOT / "configs/compare/demo").glob("*.yaml"):
        config_in(tmp, f"compare/demo/{file.name}")
    lines = []
    report = run_compare(load_config(config), smoke=True, log=lines.append)
    return tmp, config, report, lines


def test_every_method_trains_and_every_model_is_in_the_report(smoke_run):
    tmp, config, report, lines = smoke_run
    compare = load_config(config)
    for phase in compare.phases:  # each phase finished, as a smoke run
        assert json.loads((phase.output() / phases.MARKER).read_text())["smoke"] is True, phase.name
    for phase in compare.phases[1:]:
        if phase.command == "fit":
            assert (phase.output() / "adapter_config.json").is_file(), phase.name
    labels = [r["label"] for r in report["rows"]]
    assert {"sft-base", *METHODS} <= set(labels)
    assert {f"{m} @ n={n}" for m in BUDGETED for n in (16, 32, 64)} <= set(labels)
    for row in report["rows"]:  # a budget row states its n and measures |L - n|; a plain one neither
        if "@ n=" in row["label"]:
            assert row["budget_mean"] == int(row["condition"]) and row["budget_abs_error"] is not None
        else:
            assert row["budget_mean"] is None and row["budget_abs_error"] is None
    text = (tmp / "runs/compare/report_all/report.md").read_text()
    assert text == report["markdown"] and "## Time per phase" in text
    assert all(f"`{label}`" in text for label in labels)
    assert sum(r["pareto"] for r in report["rows"]) >= 1
    assert (tmp / "runs/compare/report_all/pareto_sums.png").stat().st_size > 5000
    assert sum("finished in" in line for line in lines) == len(compare.phases)


def test_rerun_skips_every_phase_and_reports_their_earlier_times(smoke_run, monkeypatch):
    tmp, config, first, _ = smoke_run
    ran = []
    monkeypatch.setattr(phases, "run_phase", lambda phase, *a: ran.append(phase.name))
    lines = []
    again = run_compare(load_config(config), smoke=True, log=lines.append)
    assert ran == [] and sum("skipped" in line for line in lines) == len(load_config(config).phases)
    assert [r["label"] for r in again["rows"]] == [r["label"] for r in first["rows"]]
    timings = json.loads((tmp / "runs/compare/report_all/compare.json").read_text())["timings"]
    assert all(not t["this_run"] and t["smoke"] and t["seconds"] > 0 for t in timings.values())
