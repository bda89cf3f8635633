"""Short arithmetic word problems for the real-model laptop run (SmolLM2-135M-Instruct).

Flow: ``python -m lapo_lightning.demo.word_problems --out data/word_problems`` writes
``train.jsonl`` and ``test.jsonl``, read by ``configs/real/smollm2_*.yaml`` and
``configs/real/eval_smollm2.yaml``, and ``heldout.jsonl``, read by
``configs/compare/smollm2/eval*.yaml``, like any math set (``id``, ``problem``, ``answer``,
``level``, ``source``). Generated here, so nothing is downloaded and the rows carry no
third-party licence.

A problem starts with a count and applies ``level`` changes (1 or 2 in train and test; 1, 2
or 3 in heldout), each adding or taking away a few items, so the work a correct answer needs
grows with the level::

    Mia has 7 apples. She buys 4 more apples. Then she gives away 3 apples.
    How many apples does Mia have now?                      (level 2, answer 8)

Why not GSM8K: SmolLM2-135M-Instruct solved 0 of the 24 easiest GSM8K training rows (greedy,
200-token cap, chat template), too few right answers for GRPO to learn from. On these, with
the one-shot system message of ``configs/real/smollm2_stage1.yaml``, it solved 30% of level 1
and 20% of level 2 greedily (10 test rows each, 160-token cap) but none of 10 with three
changes, so the training sets stop at two.

The held-out set (300 problems: 150, 100 and 50 of levels 1, 2 and 3) is drawn after train and
test from the same generator, skipping every text drawn before, so it shares no problem with
them. Weighted to the easy levels so that the base model lands inside 20-80% overall: probed
greedily on 20 fresh problems per level (128-token cap), SmolLM2 solved 40% of level 1, 20% of
level 2 and none of levels 3 or 4; a story with no change at all ("Mia has 7 apples. How many
apples does Mia have now?") was no easier (40% of 40: it copies the example's additions), so the
levels start at one change.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from lapo_lightning.demo.task import write_jsonl_splits

NAMES = [("Mia", "She"), ("Tom", "He"), ("Ana", "She"), ("Ben", "He"), ("Zoe", "She"), ("Sam", "He"),
         ("Lily", "She"), ("Max", "He")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "coins", "shells"]
GAIN = ["buys {n} more {item}", "finds {n} more {item}", "gets {n} more {item} from a friend"]
LOSS = ["gives away {n} {item}", "loses {n} {item}", "gives {n} {item} to a friend"]
SPLITS = {"train": {1: 100, 2: 100}, "test": {1: 20, 2: 20}, "heldout": {1: 150, 2: 100, 3: 50}}


def make_problem(rng: random.Random, level: int) -> tuple[str, int]:
    """One problem text of ``level`` changes and its answer (never negative)."""
    (name, pronoun), item = rng.choice(NAMES), rng.choice(ITEMS)
    count = rng.randint(2, 9)
    sentences = [f"{name} has {count} {item}."]
    for step in range(level):
        taking = count > 1 and rng.random() < 0.5
        n = rng.randint(1, count - 1) if taking else rng.randint(1, 9)
        count += -n if taking else n
        verb = rng.choice(LOSS if taking else GAIN).format(n=n, item=item)
        sentences.append(f"{pronoun if step == 0 else 'Then ' + pronoun.lower()} {verb}.")
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), count


def make_splits(seed: int = 0) -> dict[str, list[dict]]:
    """Train and test rows, levels shuffled together (so ``data.max_problems`` keeps every
    level); no problem text appears in both."""
    rng, seen, out = random.Random(seed), set(), {}
    for split, per_level in SPLITS.items():
        drawn = []
        for level, n in per_level.items():
            while sum(lv == level for _, _, lv in drawn) < n:
                text, answer = make_problem(rng, level)
                if text not in seen:
                    seen.add(text)
                    drawn.append((text, answer, level))
        rng.shuffle(drawn)
        out[split] = [{"id": f"{split}-{i:04d}", "problem": text, "answer": str(answer), "level": level,
                       "source": f"lapo_lightning.demo.word_problems (seed {seed})"}
                      for i, (text, answer, level) in enumerate(drawn)]
    return out


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``<out_dir>/{train,test}.jsonl``; returns split -> path."""
    return write_jsonl_splits(make_splits(seed), out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/word_problems")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for split, path in write_splits(args.out, args.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
