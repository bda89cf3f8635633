"""The repository speaks for itself: no text in it points at what only its builders could see.

Every tracked text file (code, configs, docs, scripts) is searched for references a user who
cloned the repository alone cannot follow: an issue number, a design or style file kept outside
the repository, a folder beside the checkout, or the working sessions the code was written in.
What such a reference supported belongs in the text as a statement with its measurement and
the machine it came from.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
FORBIDDEN = {
    "an issue number": r"\bissues?\s+#?\d+\b",
    "a design file outside the repository": "DESIGN" + r"\.md",
    "a style file outside the repository": "STYLE_" + "ANCHORS",
    "a folder beside the checkout": r"(\.\./|/work/)" + "shared",
    "the sessions the code was written in": r"\b(earlier|previous|other|working|our) " + r"sessions?\b",
}
TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini", ""}


def tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        return [ROOT / name for name in names]
    except (OSError, subprocess.CalledProcessError):  # an export without .git: every file but the usual outputs
        skip = {".git", ".venv", "runs", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_text_refers_to_what_is_not_in_the_repository():
    found = []
    for path in tracked_files():
        if path.suffix not in TEXT or path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for what, pattern in FORBIDDEN.items():
            for match in re.finditer(pattern, text, flags=re.IGNORECASE):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what} ({match.group(0)!r})")
    assert not found, "\n".join(found)


def test_the_search_finds_each_kind_of_reference():
    samples = {"an issue number": "as issue 14 reports", "a design file outside the repository": "see DESIGN" ".md §2",
               "a style file outside the repository": "STYLE_" "ANCHORS says",
               "a folder beside the checkout": "copied from ../" "shared/data",
               "the sessions the code was written in": "measured in an earlier " "session"}
    for what, text in samples.items():
        assert re.search(FORBIDDEN[what], text, flags=re.IGNORECASE), what
