"""Every command's help states each option's default and the exit codes it can end with (DESIGN.md's list)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
import pytest
from _support import enrich

from enrich import errors
from enrich.cli import main


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
    "enrich run": {0, 1, 2, 3, 4, 5, 6, 7, 130},
    "enrich jobs run": {0, 1, 2, 3, 4, 5, 6, 7, 130},
    "enrich jobs validate": {0, 1, 2, 3, 5, 130},
    "enrich jobs show": {0, 1, 2, 130},
    "enrich finetune": {0, 1, 2, 3, 5, 7, 130},
    "enrich export": {0, 1, 2, 5, 7, 130},
    "enrich eval": {0, 1, 2, 3, 5, 7, 130},
    "enrich review": {0, 1, 2, 3, 7, 130},
    "enrich claims learn": {0, 1, 2, 3, 7, 130},
    "enrich claims show": {0, 1, 2, 3, 130},
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
    7: ("no room", "disk full"),
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
    assert set(codes) <= set(errors.exit_codes())
    for code, meaning in codes.items():
        assert any(word in meaning for word in MEANING[code]), f"{name}: exit {code} described as {meaning!r}"


def test_every_command_and_group_has_help_with_examples() -> None:
    def walk(group: click.Group, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        for name, command in group.commands.items():
            yield [*path, name], command
            if isinstance(command, click.Group):
                yield from walk(command, [*path, name])

    for path, command in walk(main, []):
        r = enrich(*path, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output, (path, r.output)
        assert command.help and "Example" in command.help, f"{' '.join(path)} needs help with examples"


# --option-name in text; `--set policies.x=...` yields --set.
# An option as a message names it: "--no-" alone is the prefix of switches (code testing a flag), not an option.
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")
PACKAGE = Path(__file__).resolve().parent.parent / "enrich"
# Options of other programs that enrich names: pip's in an install hint, llama.cpp's converter's in its argv.
FOREIGN = {"--no-deps", "--outfile", "--outtype"}


def options_of(name: str) -> set[str]:
    """Every long option of a command, both names of a switch, and --help."""
    params = COMMANDS[name].params
    found = {o for p in params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    return {o for o in found if o.startswith("--")} | {"--help"}


def mentions(nodes: Iterable[ast.AST]) -> Iterator[tuple[int, str]]:
    """(line, --option) for each option named in a string constant (f-strings' literal parts included)."""
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                for option in OPTION.findall(sub.value):
                    yield sub.lineno, option


def test_no_message_names_an_option_that_does_not_exist() -> None:
    real = set().union(*(options_of(name) for name in COMMANDS), {"--version"}, FOREIGN)
    unknown = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {option}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, option in mentions([ast.parse(path.read_text(encoding="utf-8"))])
        if option not in real
    ]
    assert not unknown, "\n".join(unknown)


def reachable(path: Path, entries: set[str]) -> list[ast.AST]:
    """The module's functions and classes that entries reach by calling them by name, entries included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    seen, todo = set(), [e for e in entries if e in defs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for sub in ast.walk(defs[name]):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in defs:
                todo.append(sub.func.id)
    return [defs[name] for name in sorted(seen)]


@pytest.mark.parametrize(
    ("command", "option"),
    [(["run", "-o", "out.parquet"], "--input-format"), (["finetune", "-o", "adapter"], "--format")],
)
def test_the_catalog_reader_names_the_format_option_of_the_command_that_reads(
    command: list[str], option: str, tmp_path: Path
) -> None:
    """run, finetune and eval share the catalog reader; where it cannot tell a file's format, or finds a Parquet
    file named like a CSV, it names the option of the command that is reading."""
    from click.testing import CliRunner

    odd = tmp_path / "catalog.xlsx"
    odd.write_bytes(b"PK")
    named = tmp_path / "catalog.csv"
    named.write_bytes((Path(__file__).parent.parent / "examples" / "catalog.parquet").read_bytes())
    for given in (odd, named):
        r = CliRunner().invoke(main, [command[0], str(given), *command[1:], "--log-format", "json"])
        assert r.exit_code in (2, 3), r.output
        assert option in r.output and (option == "--format" or "--format " not in r.output), r.output
