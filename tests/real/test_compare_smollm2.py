"""`lapo compare --config configs/compare/smollm2.yaml --smoke` on SmolLM2-135M-Instruct: every
method trains one step, both evaluations run on a few held-out problems, and the report gives
each row its 95% intervals and its paired difference to the base (the full run: README.md).

Run: pytest tests/real/test_compare_smollm2.py -q
"""

from __future__ import annotations

import json

import pytest

from clitools import ROOT, config_in
from lapo_lightning.compare.run import load_config, run_compare

pytestmark = [pytest.mark.real, pytest.mark.slow]
TRAINED = ("acc-only", "lapo-stage1", "lapo-stage2", "kimi")


@pytest.fixture(scope="module")
def smoke_run(smollm2, tmp_path_factory):
    """smollm2.yaml and its phase configs copied into a temp folder (outputs there), run --smoke."""
    tmp = tmp_path_factory.mktemp("compare_smollm2")
    config = config_in(tmp, "compare/smollm2.yaml", **{"configs/compare/smollm2/": f"{tmp}/"})
    for file in (ROOT / "configs/compare/smollm2").glob("*.yaml"):
        config_in(tmp, f"compare/smollm2/{file.name}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # data/word_problems/ is read relative to the repository
        lines = []
        report = run_compare(load_config(config), smoke=True, log=lines.append)
    return tmp, report, lines


def _inside(ci: list[float], value: float) -> bool:
    return ci[0] - 1e-9 <= value <= ci[1] + 1e-9


def test_every_model_and_budget_has_a_row_with_intervals(smoke_run):
    tmp, report, lines = smoke_run
    rows = {r["label"]: r for r in report["rows"]}
    assert set(rows) == {"base", *TRAINED, *(f"{m} @ n={n}" for m in ("base", "lapo-stage2") for n in (32, 64))}
    for label, row in rows.items():
        assert row["benchmark"] == "word_problems" and row["problems"] == 6 and row["temperature"] == 0.0
        assert _inside(row["pass@1_ci"], row["pass@1"]) and _inside(row["tokens_mean_ci"], row["tokens_mean"])
        assert row["tokens_mean"] <= 16  # the smoke cap
        if label.startswith("base"):
            assert not row.get("vs_baseline"), label  # the baseline is not compared with itself
            continue
        versus = row["vs_baseline"]  # paired with the base under the same budget condition
        assert versus["model"] == "base", label
        for name in ("pass@1", "tokens_mean"):
            difference = row[name] - rows[label.replace(label.split(" @")[0], "base")][name]
            assert versus[name][0] == pytest.approx(difference) and _inside(versus[name][1:], difference), label
        if "@ n=" in label:
            assert row["budget_mean"] == int(label.split("=")[1])
            assert _inside(row["budget_abs_error_ci"], row["budget_abs_error"]), label
            assert len(versus["budget_abs_error"]) == 3, label  # paired |L - n| difference too


def test_the_report_shows_intervals_levels_and_times(smoke_run):
    tmp, report, lines = smoke_run
    text = (tmp / "runs/compare_smollm2/report/report.md").read_text()
    assert text == report["markdown"] and "## word_problems: 6 problems, 1 samples each, temperature 0.0" in text
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == len(report["rows"])
    for line in table:  # Pass@1 and #Tok intervals in brackets; Δ against the base except on base rows
        assert line.count("[") >= (2 if line.startswith("| `base") else 4), line
    assert "| Method | Pass@1 (%) | 95% interval |" in text and "#Tok L1" in text
    assert "## Time per phase" in text and sum("finished in" in line for line in lines) == 6
    saved = json.loads((tmp / "runs/compare_smollm2/report/compare.json").read_text())
    assert all(t["smoke"] for t in saved["timings"].values())
