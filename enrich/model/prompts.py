"""Prompt building and output cleaning. Pure: no I/O, no model; training and inference share these."""

from __future__ import annotations

import datetime
import decimal
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# A chat renderer turns messages into text (tokenizer.apply_chat_template with tokenize=False).
ChatRenderer = Callable[..., str]

INSTRUCTION = "Describe the following product in detail."


@dataclass(frozen=True)
class Template:
    """A prompt template: text with an {input} slot, or the tokenizer's chat template."""

    name: str
    prompt: str | None  # None: the tokenizer's chat template renders the prompt
    markers: tuple[str, ...]  # text that must never appear in a clean output (template_leak)


# The Alpaca wording, verbatim, including the blank lines: models trained on Alpaca-style data
# key on "### Response:\n" as the point where the answer starts.
ALPACA = Template(
    name="alpaca",
    prompt=(
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{INSTRUCTION}\n\n### Input:\n{{input}}\n\n### Response:\n"
    ),
    markers=("### Instruction", "### Input", "### Response", "Below is an instruction"),
)

# The reference recipe's Portuguese wording of the same prompt.
ALPACA_PT = Template(
    name="alpaca-pt",
    prompt=(
        "Abaixo está uma instrução que descreve uma tarefa, juntamente com uma entrada que fornece mais contexto. "
        "Escreva uma resposta que complete adequadamente o pedido.\n\n"
        "### Instrução:\nDescreva o seguinte produto em detalhes.\n\n### Entrada:\n{input}\n\n### Resposta:\n"
    ),
    markers=("### Instrução", "### Entrada", "### Resposta", "Abaixo está uma instrução"),
)

CHAT = Template(
    name="chat",
    prompt=None,
    markers=("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|eot_id|>", "[INST]", "### Instruction"),
)

TEMPLATES = {t.name: t for t in (ALPACA, ALPACA_PT, CHAT)}


def get_template(name: str) -> Template:
    """Look a template up by name."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATES)}") from None


# U+2060 WORD JOINER: invisible, no line break, and in no tokenizer's list of special tokens. Put after the first
# character of a special-token string found in catalog text, it splits the string, so the tokenizer reads it as
# ordinary text; the text still looks the same to a person. Byte-level BPE (SmolLM2, Llama 3) and SentencePiece
# tokenizers keep the character; a normalizer that drops format characters (BERT's) would undo it.
WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class PromptTokens:
    """What building prompts takes from a tokenizer: its chat renderer (None: no tokenizer or no chat
    template) and its special-token strings, which catalog text must never spell out (see neutralise)."""

    render_chat: ChatRenderer | None = None
    specials: tuple[str, ...] = ()


@functools.lru_cache(maxsize=16)
def _specials_pattern(specials: tuple[str, ...]) -> re.Pattern[str] | None:
    # Longest first, so that a special token that contains another is matched whole. A one-character token
    # cannot be split, and one that holds the joiner itself would be matched again and again: both are left out.
    breakable = sorted({s for s in specials if len(s) > 1 and WORD_JOINER not in s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, breakable))) if breakable else None


def _split(match: re.Match[str]) -> str:
    token = match.group()
    return token[0] + WORD_JOINER + token[1:]


def neutralise(text: str, specials: Sequence[str]) -> str:
    """Catalog text with every special-token string in it split by a WORD JOINER, so that it tokenizes as text,
    never as a control token; text without one is returned unchanged."""
    pattern = _specials_pattern(tuple(specials))
    if pattern is None:
        return text
    # A split can leave another special token in the rest of the first one ("<<s>" holds "<s>"): repeat.
    while pattern.search(text):
        text = pattern.sub(_split, text)
    return text


# An attribute value is cut to this many characters: a catalog's long text columns (a spec table, a bullet list)
# would crowd out the title and cost tokens on every row.
VALUE_CHARS = 120


def attribute_text(value: Any) -> str | None:
    """An attribute's value as the prompt states it, or None where there is nothing to state (null, empty, an
    empty list). Numbers are written plainly (1499, not 1499.0; 0.0001, not 1e-04), lists joined by ", ", a
    struct as key: value pairs, dates in ISO form; the text is cut to VALUE_CHARS."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float | decimal.Decimal):
        if value != value or value in (float("inf"), float("-inf")):  # NaN and infinities state nothing
            return None
        number = decimal.Decimal(repr(value)) if isinstance(value, float) else value
        text = format(number.normalize(), "f")
    elif isinstance(value, list | tuple):
        parts = [t for t in (attribute_text(v) for v in value) if t]
        text = ", ".join(parts)
    elif isinstance(value, dict):
        parts = [f"{k}: {t}" for k, v in value.items() if (t := attribute_text(v))]
        text = ", ".join(parts)
    elif isinstance(value, datetime.date | datetime.datetime):
        text = value.isoformat()
    else:
        text = str(value)
    text = " ".join(text.split())  # one line: a line break would start a new attribute
    if not text:
        return None
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1].rstrip() + "…"


def product_block(title: str, attributes: Sequence[tuple[str, str]] = ()) -> str:
    """What the prompt says of a product: its title, then a `Label: value` line per attribute that has a value.
    The one rendering of a product, for every template, in fine-tuning, runs, dry runs, Ray workers and eval;
    without attributes it is the title alone, so a title-only model is prompted as it always was."""
    if not attributes:
        return title
    return "\n".join([title, *(f"{label}: {value}" for label, value in attributes)])


def stated_attributes(
    attributes: tuple[tuple[str, str], ...], columns: dict[str, list[Any]], n: int
) -> list[list[tuple[str, str]]]:
    """Per row, the (label, value) pairs the prompt states: values rendered as text, the empty ones left out."""
    if not attributes:
        return []
    rendered = [(label, [attribute_text(v) for v in columns[column]]) for column, label in attributes]
    rows: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for label, values in rendered:
        for off, value in enumerate(values):
            if value is not None:
                rows[off].append((label, value))
    return rows


def _chat_messages(title: str, response: str | None = None) -> list[dict[str, str]]:
    # The title goes on its own paragraph so that a title ending in a sentence does not run into the instruction.
    messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{title}"}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def build_prompt(
    title: str, template: Template, render_chat: ChatRenderer | None = None, specials: Sequence[str] = ()
) -> str:
    """The prompt for one product title; the tokenizer's special-token strings in it are neutralised."""
    title = neutralise(title, specials)
    if template.prompt is not None:
        return template.prompt.replace("{input}", title)
    if render_chat is None:
        raise ValueError("the chat template needs a tokenizer with a chat template")
    return render_chat(_chat_messages(title), tokenize=False, add_generation_prompt=True)


def build_prompts(
    titles: Sequence[str],
    template: Template,
    render_chat: ChatRenderer | None = None,
    specials: Sequence[str] = (),
) -> list[str]:
    """Prompts for many titles (the run's hot path: one str.replace per row for text templates)."""
    if specials:
        titles = [neutralise(t, specials) for t in titles]
    if template.prompt is not None:
        head, _, tail = template.prompt.partition("{input}")
        return [head + t + tail for t in titles]
    return [build_prompt(t, template, render_chat) for t in titles]


def build_training_text(
    title: str,
    description: str,
    template: Template,
    eos: str,
    render_chat: ChatRenderer | None = None,
    specials: Sequence[str] = (),
) -> tuple[str, str]:
    """(prompt, completion) for fine-tuning: the completion is the description followed by EOS.

    EOS after every response is what teaches a fine-tuned model to stop; without it generations run to the limit.
    Title and description are catalog text: their special-token strings are neutralised, as in runs.
    """
    title, description = neutralise(title, specials), neutralise(description, specials)
    prompt = build_prompt(title, template, render_chat)
    if template.prompt is not None:
        return prompt, description + eos
    full = render_chat(_chat_messages(title, description), tokenize=False)  # type: ignore[misc]
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    completion = full[len(prompt) :]
    # Chat templates close the turn with their own end marker; make sure the model's EOS ends it.
    if eos not in completion:
        completion += eos
    return prompt, completion


def clean_output(text: str, stop: Sequence[str] = ()) -> str:
    """Model text to the description: cut at the first stop string, strip whitespace."""
    for s in stop:
        if s:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
    return text.strip()
