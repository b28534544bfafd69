"""Every command's help states each option's default and the exit codes it can end with (DESIGN.md's list)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

from enrich.cli import main
from enrich.errors import EXIT_NAMES


def commands(group: click.Group = main, path: str = "enrich") -> Iterator[tuple[str, click.Command]]:
    """Every command under the group, by its full name (enrich jobs run)."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


COMMANDS = dict(commands())
# The exit codes each command that does work can end with; `enrich models` only prints a table.
EXIT_CODES = {
    "enrich run": {0, 1, 2, 3, 4, 5, 6, 130},
    "enrich jobs run": {0, 1, 2, 3, 4, 5, 6, 130},
    "enrich jobs validate": {0, 1, 2, 3, 5, 130},
    "enrich jobs show": {0, 1, 2, 130},
    "enrich finetune": {0, 1, 2, 3, 5, 130},
    "enrich export": {0, 1, 2, 5, 130},
    "enrich eval": {0, 1, 2, 3, 5, 130},
}
# What each code means (DESIGN.md, errors.py): a word that its description in a command's help must hold.
MEANING = {
    0: ("ok", "verified"),
    1: ("bug",),
    2: ("usage", "option", "job file", "configuration"),
    3: ("input", "data"),
    4: ("lock",),
    5: ("engine", "GPU"),
    6: ("error file",),
    130: ("interrupted",),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_states_its_default(name: str) -> None:
    command = COMMANDS[name]
    ctx = click.Context(command, info_name=name)
    missing = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_flag or param.required:
            continue
        record = param.get_help_record(ctx)
        text = record[1].lower() if record else ""
        if "default" not in text and "required" not in text:
            missing.append(param.opts[-1])
    assert not missing, f"{name}: the help of {', '.join(missing)} does not state a default"


def exit_codes(help_text: str) -> dict[int, str]:
    """The codes of a help's 'Exit codes: N meaning; M meaning...' paragraph, each with its meaning."""
    paragraph = help_text[help_text.index("Exit codes") :].split("\n\n")[0]
    listed = " ".join(paragraph.partition(":")[2].split())
    out = {}
    for part in listed.split(";"):
        match = re.fullmatch(r"\s*(\d+) (.+?)\.?\s*", part)
        assert match, f"not 'CODE meaning': {part!r}"
        out[int(match[1])] = match[2]
    return out


def test_the_exit_code_table_covers_every_command() -> None:
    assert set(COMMANDS) == {*EXIT_CODES, "enrich models"}


@pytest.mark.parametrize("name", sorted(EXIT_CODES))
def test_every_command_lists_its_exit_codes(name: str) -> None:
    help_text = COMMANDS[name].help or ""
    assert "Exit codes" in help_text, f"{name}: no exit codes in its help"
    codes = exit_codes(help_text)
    assert set(codes) == EXIT_CODES[name]
    assert set(codes) <= set(EXIT_NAMES)
    for code, meaning in codes.items():
        assert any(word in meaning for word in MEANING[code]), f"{name}: exit {code} described as {meaning!r}"


def test_help_is_rendered_for_every_command() -> None:
    from click.testing import CliRunner

    for name in COMMANDS:
        r = CliRunner().invoke(main, [*name.split()[1:], "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, (name, r.output)
