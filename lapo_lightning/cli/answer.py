"""``lapo answer``: its command line, parsed before anything heavy is imported.

``lapo answer --adapter runs/stage2/adapter "What is 2+3?"``. ``--help`` and argument errors
answer at once; torch, transformers and the model load (``inference.py``) only after parsing.
"""

from __future__ import annotations

import argparse
import sys

from lapo_lightning.length_table import MAX_TOKENS
from lapo_lightning.prompts import PROMPTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lapo answer", description="Answer questions with a trained adapter.")
    parser.add_argument("question", nargs="?", help="the question (or use --file)")
    parser.add_argument("--file", help="questions: one per line, or .jsonl with a 'problem' field")
    parser.add_argument("--adapter", help="trained adapter folder, e.g. runs/stage2/adapter")
    parser.add_argument("--base", help="base model; default the one recorded in the adapter")
    parser.add_argument("--budget", type=int, help="state this token budget in the prompt (default: none)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--prompt", choices=sorted(PROMPTS),
                        help="prompt template (default: the one recorded with the adapter, else plain)")
    args = parser.parse_args(argv)
    if (args.question is None) == (args.file is None):
        parser.error("give a question or --file, not both")
    if args.budget is not None and not 1 <= args.budget <= MAX_TOKENS:  # what a length table holds as a target
        parser.error(f"--budget must be a token count from 1 to {MAX_TOKENS:,.0f}, got {args.budget}")
    from lapo_lightning.inference import InferenceError, choose_prompt, generate, load, read_questions

    try:
        questions = read_questions(args.file) if args.file else [args.question]
        prompt = choose_prompt(args.prompt, args.adapter)
        model, tokenizer = load(args.adapter, args.base)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, question in enumerate(questions):
        result = generate(model, tokenizer, question, args.budget, args.max_new_tokens, args.temperature, prompt)
        if len(questions) > 1:
            print(f"### question {i + 1}: {question}")
        print(result.text)
        print(f"answer: {result.answer}")
        print(f"tokens: {result.tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
