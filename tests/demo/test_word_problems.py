"""The laptop run's word problems (lapo_lightning/demo/word_problems.py, data/word_problems/).

Run: python -m pytest tests/demo/test_word_problems.py -q
"""

import re
from collections import Counter
from pathlib import Path

from lapo_lightning.problem_sets.files import ProblemFields, load_problems
from lapo_lightning.demo.word_problems import SPLITS, make_splits, write_splits

ROOT = Path(__file__).resolve().parents[2]


def test_answers_follow_the_story():
    """Recompute every answer from the text: 'has N', then +n for gains and -n for losses."""
    for rows in make_splits(seed=1).values():
        for row in rows:
            count = int(re.search(r"has (\d+)", row["problem"]).group(1))
            changes = re.findall(r"(buys|finds|gets|gives away|loses|gives) (\d+)", row["problem"])
            assert len(changes) == row["level"]
            for verb, n in changes:
                count += int(n) if verb in ("buys", "finds", "gets") else -int(n)
                assert count >= 0
            assert row["answer"] == str(count)


def test_splits_are_seeded_sized_shuffled_and_disjoint():
    splits = make_splits(seed=3)
    assert splits == make_splits(seed=3) and splits != make_splits(seed=4)
    for name, rows in splits.items():
        assert Counter(r["level"] for r in rows) == Counter(SPLITS[name])
        assert len({r["id"] for r in rows}) == len(rows)
    train = splits["train"]
    assert set(r["level"] for r in train[:10]) == {1, 2}  # data.max_problems keeps both levels
    texts = {name: {r["problem"] for r in rows} for name, rows in splits.items()}
    assert not texts["train"] & texts["test"] and not texts["heldout"] & (texts["train"] | texts["test"])


def test_shipped_heldout_set_shares_no_problem_with_training():
    """The 300 problems configs/compare/smollm2/eval.yaml evaluates on: three levels, none of
    them (even up to spacing and case) in train.jsonl or test.jsonl."""
    def load(split):
        return load_problems(str(ROOT / "data" / "word_problems" / f"{split}.jsonl"), ProblemFields())

    def key(problem):
        return " ".join(problem.problem.lower().split())

    heldout = load("heldout")
    assert len(heldout) >= 300 and Counter(p.extra["level"] for p in heldout) == Counter(SPLITS["heldout"])
    assert len(set(SPLITS["heldout"])) >= 3 and len({key(p) for p in heldout}) == len(heldout)
    seen = {key(p) for split in ("train", "test") for p in load(split)}
    assert not seen & {key(p) for p in heldout}
    assert not {p.id for p in heldout} & {p.id for split in ("train", "test") for p in load(split)}


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    for split, path in write_splits(tmp_path).items():
        shipped = ROOT / "data" / "word_problems" / path.name
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} differs: rerun the generator"
        assert len(load_problems(str(shipped), ProblemFields())) == sum(SPLITS[split].values())
