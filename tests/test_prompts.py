"""Prompt templates and the budget sentence (lapo_lightning/prompts.py).

Covers: the exact official plain prompt, each budget placement (think, outside, range,
none), render/parse round trips, stage 1 == stage 2 apart from the sentence, ChatPrompt
through a tiny tokenizer saved and reloaded offline (with and without a template that
already opens <think>), construction errors, and which rendered prompts leave <think> open.
Run: HF_HUB_OFFLINE=1 python -m pytest tests/test_prompts.py -q
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lapo_lightning.prompts import (  # noqa: E402
    PROMPT_FILE,
    R1_SYSTEM,
    ChatPrompt,
    PlainPrompt,
    budget_range,
    load_prompt,
    opens_think,
    parse_budget,
    parse_budget_range,
    render_budget,
    render_budget_range,
    save_prompt,
)

PROBLEM = r"What is $\frac{1}{2} + \frac{1}{4}$?"
# The official f-string, written out by hand.
OFFICIAL = (
    R1_SYSTEM + " User: " + PROBLEM
    + " Please think step by step and output the final answer within \\boxed{}. Assistant: <think>"
)

SIMPLE_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
R1_DISTILL_LIKE = SIMPLE_TEMPLATE.replace("<|assistant|>", "<|assistant|><think>\n")


def test_system_prompt_is_the_official_text():
    assert R1_SYSTEM.startswith("You are a helpful assistant. A conversation between User and Assistant.")
    assert R1_SYSTEM.endswith("<think> reasoning process here </think> answer here .")


def test_plain_stage1_matches_the_official_prompt():
    assert PlainPrompt().render(PROBLEM) == OFFICIAL


def test_think_placement_puts_the_sentence_right_after_think():
    text = PlainPrompt().render(PROBLEM, budget=512)
    assert text == OFFICIAL + " I will answer the question with 512 tokens."


def test_outside_placement_puts_the_sentence_before_think():
    text = PlainPrompt(placement="outside").render(PROBLEM, budget=512)
    assert text.endswith("Assistant: I will answer the question with 512 tokens. <think>")
    assert text.startswith(OFFICIAL[: -len("Assistant: <think>")])


def test_range_placement_states_a_centred_range():
    text = PlainPrompt(placement="range", range_width=100).render(PROBLEM, budget=300)
    assert text == OFFICIAL + " I will answer the question with 250 to 350 tokens."
    assert budget_range(50, 200) == (0, 150)  # clipped at zero
    assert budget_range(501, 3) == (500, 503)


def test_none_placement_renders_no_sentence():
    assert PlainPrompt(placement="none").render(PROBLEM, budget=512) == OFFICIAL


@pytest.mark.parametrize("placement", ["think", "outside", "range", "none"])
def test_budget_none_is_stage1_for_every_placement(placement):
    prompt = PlainPrompt(placement=placement)
    assert prompt.render(PROBLEM, budget=None) == OFFICIAL


@pytest.mark.parametrize("placement", ["think", "outside", "range", "none"])
def test_stage2_only_adds_the_sentence(placement):
    prompt = PlainPrompt(placement=placement)
    stage1, stage2 = prompt.render(PROBLEM), prompt.render(PROBLEM, budget=700)
    sentence = {
        "think": render_budget(700),
        "outside": render_budget(700).strip() + " ",
        "range": render_budget_range(600, 800),
        "none": "",
    }[placement]
    assert stage2.replace(sentence, "", 1) == stage1


@pytest.mark.parametrize("budget", [0, 1, 77, 4096])
def test_round_trip_for_each_placement(budget):
    assert parse_budget(PlainPrompt(placement="think").render(PROBLEM, budget)) == budget
    assert parse_budget(PlainPrompt(placement="outside").render(PROBLEM, budget)) == budget
    ranged = PlainPrompt(placement="range").render(PROBLEM, budget)
    assert parse_budget_range(ranged) == budget_range(budget, 200)
    assert parse_budget(ranged) is None  # the two sentences never parse as each other
    implicit = PlainPrompt(placement="none").render(PROBLEM, budget)
    assert parse_budget(implicit) is None and parse_budget_range(implicit) is None


def test_parse_finds_the_last_sentence_anywhere():
    assert parse_budget("x" + render_budget(5) + " then" + render_budget(9) + " more") == 9
    assert parse_budget(PlainPrompt().render(PROBLEM)) is None
    assert parse_budget("I will answer the question with many tokens.") is None
    assert parse_budget_range(render_budget_range(3, 8)) == (3, 8)


def test_budget_sentence_rejects_bad_numbers():
    with pytest.raises(TypeError):
        render_budget(12.5)
    with pytest.raises(ValueError, match=">= 0"):
        render_budget(-1)
    with pytest.raises(ValueError, match="low <= high"):
        render_budget_range(9, 3)


def test_problem_braces_and_placeholders_are_kept_verbatim():
    problem = r"Find {x} such that \{x\} = {problem} and {0}."
    assert PlainPrompt().render(problem) == OFFICIAL.replace(PROBLEM, problem)


def test_custom_template_and_its_errors():
    prompt = PlainPrompt(system="S", instruction="!", template="{system}\n{problem}{instruction}\n<think>\n")
    assert prompt.render("Q", budget=3) == "S\nQ!\n<think> I will answer the question with 3 tokens.\n"
    with pytest.raises(ValueError, match=r"template.*\{problem\}"):
        PlainPrompt(template="{system} Assistant: <think>")
    with pytest.raises(ValueError, match="template.*<think>"):
        PlainPrompt(template="{system} User: {problem} Assistant:")
    with pytest.raises(ValueError, match="template.*<think>"):
        PlainPrompt(template="<think> {problem}")
    assert PlainPrompt(template="{problem} =", placement="none").render("1+1", budget=9) == "1+1 ="
    with pytest.raises(ValueError, match="placement"):
        PlainPrompt(placement="inside")


@pytest.mark.parametrize("placement", ["think", "outside", "range", "none"])
def test_the_official_prompt_leaves_think_open(placement):
    prompt = PlainPrompt(placement=placement)
    assert opens_think(prompt.render(PROBLEM)) and opens_think(prompt.render(PROBLEM, budget=300))


def test_a_template_without_think_leaves_nothing_open():
    # The R1 system text still names both tags, closed: only the last <think> counts.
    prompt = PlainPrompt(template="{system} User: {problem}{instruction} Assistant:", placement="none")
    assert "<think>" in prompt.render(PROBLEM) and not opens_think(prompt.render(PROBLEM))
    assert not opens_think(PlainPrompt(template="{problem} =", placement="none").render("1+1"))
    assert not opens_think("<|assistant|><think>\n\n</think>\n\n")  # a chat template with thinking off


def save_tiny_tokenizer(path, chat_template):
    """A char-level WordLevel tokenizer, saved and reloaded the way a hub id would load."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["[UNK]"] + [chr(i) for i in range(32, 127)] + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("chat"), SIMPLE_TEMPLATE)


def test_chat_prompt_prefills_think(chat_tokenizer):
    prompt = ChatPrompt(system="Be brief.", think=True)
    stage1 = prompt.render(PROBLEM, tokenizer=chat_tokenizer)
    user = PROBLEM + " Please think step by step and output the final answer within \\boxed{}."
    assert stage1 == f"<|system|>Be brief.\n<|user|>{user}\n<|assistant|><think>"
    assert prompt.render(PROBLEM, 64, chat_tokenizer) == stage1 + render_budget(64)
    assert ChatPrompt(think=True).render(PROBLEM, tokenizer=chat_tokenizer).startswith("<|user|>")


@pytest.mark.parametrize("placement", ["think", "outside", "range"])
def test_chat_prompt_round_trip(chat_tokenizer, placement):
    prompt = ChatPrompt(placement=placement, think=True)
    text = prompt.render(PROBLEM, 321, chat_tokenizer)
    parsed = parse_budget_range(text) if placement == "range" else parse_budget(text)
    assert parsed == (budget_range(321, 200) if placement == "range" else 321)
    assert text.count("<think>") == 1


def test_chat_template_that_already_opens_think(tmp_path):
    tokenizer = save_tiny_tokenizer(tmp_path, R1_DISTILL_LIKE)
    prompt = ChatPrompt()
    stage1 = prompt.render("Q", tokenizer=tokenizer)
    assert stage1.endswith("<|assistant|><think>\n") and stage1.count("<think>") == 1
    assert opens_think(stage1)
    stage2 = prompt.render("Q", 40, tokenizer)
    assert stage2.endswith("<think> I will answer the question with 40 tokens.\n")
    outside = ChatPrompt(placement="outside").render("Q", 40, tokenizer)
    assert outside.endswith("<|assistant|>I will answer the question with 40 tokens. <think>\n")


def test_chat_prompt_without_think_states_the_budget_where_reasoning_starts(chat_tokenizer):
    # The char-level vocabulary has no <think> token, so by default nothing is prefilled.
    prompt = ChatPrompt()
    stage1 = prompt.render("Q", tokenizer=chat_tokenizer)
    user = "Q Please think step by step and output the final answer within \\boxed{}."
    assert stage1 == f"<|user|>{user}\n<|assistant|>" and not opens_think(stage1)
    assert prompt.render("Q", 40, chat_tokenizer) == stage1 + "I will answer the question with 40 tokens.\n"
    ranged = ChatPrompt(placement="range").render("Q", 300, chat_tokenizer)
    assert ranged == stage1 + "I will answer the question with 200 to 400 tokens.\n"
    outside = ChatPrompt(placement="outside").render("Q", 40, chat_tokenizer)
    assert outside == f"<|user|>{user} I will answer the question with 40 tokens.\n<|assistant|>"
    assert ChatPrompt(placement="none").render("Q", 40, chat_tokenizer) == stage1
    assert parse_budget(outside) == 40 and "<think>" not in outside


def test_chat_prompt_thinks_by_default_when_the_vocabulary_has_a_think_token(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = save_tiny_tokenizer(tmp_path, SIMPLE_TEMPLATE)
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert ChatPrompt().render("Q", tokenizer=tokenizer).endswith("<|assistant|><think>")
    assert not ChatPrompt(think=False).render("Q", tokenizer=tokenizer).endswith("<think>")


def test_chat_prompt_errors(tmp_path):
    with pytest.raises(ValueError, match="no chat_template"):
        ChatPrompt().render("Q", tokenizer=save_tiny_tokenizer(tmp_path, None))
    with pytest.raises(ValueError, match="tokenizer"):
        ChatPrompt().render("Q")


def test_a_recorded_prompt_renders_like_the_original(tmp_path):
    original = PlainPrompt(system="", instruction="", template="{problem} <think>", placement="range", range_width=40)
    save_prompt(original, tmp_path)
    loaded = load_prompt(tmp_path)
    assert type(loaded) is PlainPrompt and loaded.render("2+3", 100) == original.render("2+3", 100)
    chat = ChatPrompt(system="Be brief.", think=False, placement="outside")
    save_prompt(chat, tmp_path)
    assert vars(load_prompt(tmp_path)) == vars(chat)
    assert load_prompt(tmp_path / "missing") is None


def test_a_recorded_prompt_never_imports_foreign_code(tmp_path):
    (tmp_path / PROMPT_FILE).write_text('{"class_path": "evil_module.Prompt", "init_args": {}}')
    with pytest.raises(ValueError, match="refusing to import 'evil_module'"):
        load_prompt(tmp_path)
    (tmp_path / PROMPT_FILE).write_text('{"class_path": "lapo_lightning.verify.MathVerifier", "init_args": {}}')
    with pytest.raises(ValueError, match="not a PromptTemplate"):
        load_prompt(tmp_path)
