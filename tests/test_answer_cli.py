"""``lapo answer``'s command line (lapo_lightning/cli/answer.py): help and argument errors
come back before torch or transformers is imported.

Run: python -m pytest tests/test_answer_cli.py -q
"""

import subprocess
import sys

PROBE = """
import sys
from lapo_lightning.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    print("exit", e.code)
print("heavy:", sorted(m for m in ("torch", "transformers", "lightning") if m in sys.modules))
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, "answer", *args], capture_output=True, text=True, timeout=60)


def test_help_imports_nothing_heavy():
    out = run("--help")
    assert "usage: lapo answer" in out.stdout and "--prompt {chat,plain}" in out.stdout
    assert out.stdout.strip().endswith("exit 0\nheavy: []")


def test_a_bad_argument_is_refused_before_loading_anything():
    out = run("--prompt", "nonsense", "What is 2+3?")
    assert "invalid choice: 'nonsense'" in out.stderr
    assert out.stdout.strip() == "exit 2\nheavy: []"


def test_a_budget_no_length_table_could_hold_is_refused_before_loading_anything():
    for budget in ("0", "-5", "2000000"):  # a table's targets are token counts from 1 to 1e6
        out = run("--budget", budget, "What is 2+3?")
        assert f"--budget must be a token count from 1 to 1,000,000, got {budget}" in out.stderr
        assert out.stdout.strip() == "exit 2\nheavy: []"
