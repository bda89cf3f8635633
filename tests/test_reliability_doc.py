"""docs/reliability.md's table "Bad input or fault: what you get" stays true.

Each row names a test (``tests/file.py::test_name``, a parametrized case as ``[id]``) and quotes,
in backticks in its third column, the message (or a distinctive fragment) that test asserts. For
every row this checks that the test file holds a module-level ``def test_name`` (and the case id,
when given), and that the fragment appears in what that test asserts: the source or a string
literal of the test itself, its decorators, and the module-level fixtures, helpers and constants
it names (followed transitively). Another test's literal in the same file does not count.

String literals are compared as Python reads them: implicit concatenation joined, an f-string's
``{...}`` parts shown as ``…`` (as the doc writes paths and values), and a regex given to
``pytest.raises(match=...)`` also read literally (``\\(`` as ``(``, ``.*`` as ``…``). So renaming
a test, or changing a message (and the literal its test asserts), fails this file.

Pure text: reads the doc and the test sources, imports nothing of the package.
Run: python -m pytest tests/test_reliability_doc.py -q
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
HEADER = ("bad input or fault", "when", "message (fragment)", "test")
ELLIPSIS = "…"
TEST_CELL = re.compile(r"`(?P<file>tests/[\w/]+\.py)::(?P<name>test_\w+)(?:\[(?P<case>[^\]]+)\])?`")
FRAGMENT_CELL = re.compile(r"`(?P<text>[^`]+)`")


@dataclass(frozen=True)
class Row:
    line: int
    fault: str
    fragment: str
    file: str
    test: str
    case: str | None


def cells(line: str) -> list[str]:
    """A markdown table line's cells (pipes escaped as ``\\|`` stay inside a cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip().replace("\\|", "|") for p in parts[1:-1]]


def table_rows(text: str) -> list[Row]:
    """The rows of the table whose header is ``HEADER``; a malformed row raises naming its line."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and tuple(cells(line)) == HEADER]
    if len(starts) != 1:
        raise ValueError(f"{DOC.name}: expected one table headed {' | '.join(HEADER)}, found {len(starts)}")
    rows = []
    for i in range(starts[0] + 2, len(lines)):  # skip the header and its --- line
        if not lines[i].startswith("|"):
            break
        row = cells(lines[i])
        fragment = FRAGMENT_CELL.fullmatch(row[2]) if len(row) == 4 else None
        test = TEST_CELL.fullmatch(row[3]) if len(row) == 4 else None
        if fragment is None or test is None:
            raise ValueError(f"{DOC.name} line {i + 1}: expected 4 cells, the third one `fragment`, the fourth "
                             f"`tests/file.py::test_name`; got {row}")
        rows.append(Row(i + 1, row[0], fragment["text"], test["file"], test["name"], test["case"]))
    return rows


# ------------------------------------------------------------------------ what a test asserts
def module_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Module-level functions, classes and assigned names -> their statement."""
    names: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
    return names


def scope(tree: ast.Module, test: str) -> list[ast.stmt]:
    """The test's statement and every module-level one it reaches by name (fixtures as arguments,
    helpers and constants as names), transitively."""
    names = module_names(tree)
    todo, seen = [names[test]], []
    while todo:
        node = todo.pop()
        if any(node is s for s in seen):
            continue
        seen.append(node)
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        used |= {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
                 for a in [*n.posonlyargs, *n.args, *n.kwonlyargs]}
        todo += [names[name] for name in sorted(used) if name in names]
    return seen


def literals(node: ast.AST) -> list[str]:
    """String literals under ``node`` as Python reads them; f-string parts as ``…``; regex
    patterns also read literally."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            found.append(sub.value)
        elif isinstance(sub, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else ELLIPSIS for v in sub.values))
    return found + [re.sub(r"\\(\W)", r"\1", s).replace(".*", ELLIPSIS) for s in found]


@functools.lru_cache(maxsize=None)
def parsed(path: Path) -> tuple[str, ast.Module]:
    source = path.read_text(encoding="utf-8")
    return source, ast.parse(source)


def asserted_texts(path: Path, test: str) -> tuple[list[str], list[str]]:
    """(source segments, string literals) of a test and what it reaches; KeyError if no such test."""
    source, tree = parsed(path)
    nodes = scope(tree, test)
    segments = [ast.get_source_segment(source, n) or "" for node in nodes
                for n in [node, *getattr(node, "decorator_list", [])]]
    return segments, [text for node in nodes for text in literals(node)]


def problems(row: Row, root: Path = ROOT) -> list[str]:
    """What is wrong with one row (empty when it holds); test files are read under ``root``."""
    where = f"{DOC.name} line {row.line} ({row.fault})"
    path = root / row.file
    if not path.is_file():
        return [f"{where}: no test file {row.file}"]
    _, tree = parsed(path)
    test = module_names(tree).get(row.test)
    if not isinstance(test, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [f"{where}: {row.file} has no def {row.test} (renamed?)"]
    segments, strings = asserted_texts(path, row.test)
    found = []
    if row.case is not None and row.case not in {s for n in test.decorator_list for s in literals(n)}:
        found.append(f"{where}: {row.test} has no parametrized case {row.case!r}")
    if not any(row.fragment in text for text in segments + strings):
        found.append(f"{where}: {row.file}::{row.test} does not assert `{row.fragment}` (message changed? quote "
                     "the test's literal)")
    return found


# ----------------------------------------------------------------------------------- the doc
ROWS = table_rows(DOC.read_text(encoding="utf-8"))


def test_the_table_covers_the_faults_of_issue_14():
    assert len(ROWS) >= 60, len(ROWS)
    files = {row.file for row in ROWS}
    for file in ("tests/test_preflight.py", "tests/test_data.py", "tests/test_resume.py", "tests/test_checkpointing.py",
                 "tests/test_atomic.py", "tests/test_numerical_health.py", "tests/test_length_table.py",
                 "tests/test_budgets.py", "tests/test_corrupt_adapter.py"):
        assert file in files, file


@pytest.mark.parametrize("row", ROWS, ids=[f"line{row.line}" for row in ROWS])
def test_each_row_names_a_test_that_asserts_its_message(row):
    assert problems(row) == []


# ------------------------------------------------------------------------- the checker itself
SAMPLE = '''
import pytest

MESSAGE = "model.x: must be " "> 0"


@pytest.fixture
def made(tmp_path):
    assert run() == f"--ckpt_path last: no checkpoint in {tmp_path}: starting from step 0"


@pytest.mark.parametrize("value", [1, 2], ids=["one", "two"])
def test_one(made, value):
    with pytest.raises(ValueError, match=r"reward R \\(name 'r'\\) returned nan .*rollouts"):
        check(MESSAGE)


def test_other():
    assert say() == "only here"
'''


def test_the_checker_finds_what_a_test_asserts_and_nothing_else(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "sample.py").write_text(SAMPLE, encoding="utf-8")

    def check(fragment: str, test: str = "test_one", case: str | None = None) -> list[str]:
        return problems(Row(1, "sample", fragment, "tests/sample.py", test, case), root=tmp_path)

    assert check("model.x: must be > 0") == []  # a constant the test names, implicitly concatenated
    assert check("--ckpt_path last: no checkpoint in …: starting from step 0") == []  # asserted by its fixture
    assert check("reward R (name 'r') returned nan …rollouts") == []  # a regex read literally
    assert check("check(MESSAGE)", case="two") == []  # the source itself, and a case id
    assert check("only here") != []  # another test's literal
    assert check("must be > 1") != []  # a changed message
    assert check("model.x", test="test_renamed") != []
    assert check("model.x", case="three") != []
    assert problems(Row(1, "sample", "x", "tests/missing.py", "test_one", None), root=tmp_path) != []


def test_a_malformed_row_is_named():
    table = ("| " + " | ".join(HEADER) + " |\n| --- | --- | --- | --- |\n"
             "| a | b | no backticks | `tests/x.py::test_y` |\n")
    with pytest.raises(ValueError, match="line 3: expected 4 cells"):
        table_rows(table)
    assert table_rows(table.replace("no backticks", "`msg`")) == [Row(3, "a", "msg", "tests/x.py", "test_y", None)]
