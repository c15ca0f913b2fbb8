"""The commands and links of README.md, CONTRIBUTING.md and docs/*.md exist: every `scenefit VERB --flag` in a code
block (or an inline code span that starts with `scenefit `) names a verb of the CLI and flags that
verb accepts, every `make TARGET` a target of the Makefile, and every relative link a file of the
repository (and its `#anchor` a heading of that file). Prose is never checked.

    .venv/bin/python -m pytest tests/unit/test_doc_commands.py -q
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from functools import cache
from pathlib import Path

import click
import pytest
import typer

from scenefit.cli import app

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: Tokens that end a simple command in a shell line (shlex with punctuation_chars splits them off).
OPERATORS = re.compile(r"^[;&|<>()]+$")
#: Words that run the command after them (`nice -n 10 scenefit ...`).
PREFIXES = {"nice", "nohup", "time", "exec", "sudo", "env"}


def _blocks(text: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The page without its fenced blocks (their `#` lines are comments, not headings)."""
    return FENCE.sub("", text)


def _shell_lines(block: str) -> list[str]:
    return [line for line in re.sub(r"\\\n", " ", block).splitlines() if line.strip()]


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in an example: read it without quotes
        return line.split("#", 1)[0].split()


def commands(line: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) of every simple command in a shell line whose program is scenefit or
    make, also inside `$( … )` substitutions."""
    found = []
    for inner in re.findall(r"\$\(([^()]*)\)", line):
        found += commands(inner)
    line = re.sub(r"\$\([^()]*\)", "SUBST", line)
    at_start, current = True, None
    for tok in _tokens(line):
        if OPERATORS.match(tok):
            at_start, current = True, None
            continue
        if current is not None:
            current[1].append(tok)
            continue
        if not at_start:
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tok) or tok in PREFIXES or tok.startswith("-"):
            continue  # VAR=value, `nice -n 10`: the command word comes later
        program = tok.rsplit("/", 1)[-1]
        if program in ("scenefit", "make"):
            current = (program, [])
            found.append(current)
        elif not re.fullmatch(r"\d+", tok):
            at_start = False
    return found


def doc_commands() -> list[tuple[str, str, str, list[str]]]:
    """(page, the command as written, program, arguments) for every scenefit and make command."""
    out = []
    for page in PAGES:
        text = page.read_text()
        lines = [ln for block in _blocks(text) for ln in _shell_lines(block)]
        for _, span in INLINE.findall(_prose(text)):
            if re.match(r"(make|scenefit) ", span):
                lines.append(span)
            elif re.match(r"([a-z][a-z-]*) --[a-z]", span) and span.split()[0] in cli().commands:
                lines.append("scenefit " + span)  # `predict --no-explain`: a verb and its flag
        for line in lines:
            for program, args in commands(line):
                out.append((page.relative_to(REPO).as_posix(), line.strip(), program, args))
    return out


@cache
def cli():
    return typer.main.get_group(app)


def _options(command) -> set[str]:
    params = command.get_params(click.Context(command))  # --help included
    return {opt for param in params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def problems_of(program: str, args: list[str]) -> list[str]:
    if program == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        return [f"no Makefile target {t!r}" for t in targets if t not in _makefile_targets()]
    group = cli()
    if not args or args[0].startswith("-"):
        command, rest, verb = group, args, "scenefit"
    elif re.fullmatch(r"[A-Z][A-Z_]*|VERB", args[0]):
        return []  # a placeholder (`scenefit VERB --help`)
    elif args[0] not in group.commands:
        return [f"no verb {args[0]!r}"]
    else:
        command, rest, verb = group.commands[args[0]], args[1:], args[0]
    flags = [a.strip("[]").split("=", 1)[0] for a in rest if re.match(r"^\[?--?[A-Za-z]", a)]
    known = _options(command)
    return [f"{verb} has no flag {f}" for f in flags if f not in known]


def test_the_docs_show_commands_at_all():
    """The extraction finds the commands it is meant to check (a broken reader passes nothing)."""
    found = doc_commands()
    verbs = {args[0] for _, _, program, args in found if program == "scenefit" and args}
    assert {"run", "status", "init", "predict", "serve", "ingest", "annotate", "train", "evaluate"} <= verbs
    assert any(program == "make" and args[:1] == ["demo"] for _, _, program, args in found)
    # a command inside $( … ) and after VAR=value is found too
    assert commands('SCENEFIT_API_TOKEN=$(openssl rand -hex 16) scenefit serve --students S') == [
        ("scenefit", ["serve", "--students", "S"])]
    assert commands('accelerate launch --config_file "$(scenefit configs --path accelerate/fsdp)" $SF') == [
        ("scenefit", ["configs", "--path", "accelerate/fsdp"])]
    assert commands("nice -n 10 make test VERBOSE=1 | tail  # scenefit run --bogus") == [("make", ["test", "VERBOSE=1"])]


def test_every_command_in_the_docs_exists_with_its_flags():
    bad = [f"{page}: `{line}`: {p}" for page, line, program, args in doc_commands() for p in problems_of(program, args)]
    assert bad == [], "commands the CLI or the Makefile does not know:\n" + "\n".join(bad)


def test_the_check_would_see_a_wrong_verb_and_a_wrong_flag():
    assert problems_of("scenefit", ["predcit", "--image", "x"]) == ["no verb 'predcit'"]
    assert problems_of("scenefit", ["predict", "--imgae", "x", "--box=1,2,3,4"]) == ["predict has no flag --imgae"]
    assert problems_of("scenefit", ["serve", "--no-explain"]) == ["serve has no flag --no-explain"]
    assert problems_of("scenefit", ["predict", "--no-explain", "-o", "x"]) == []
    assert problems_of("scenefit", ["run", "--out", "R", "[--manifest", "M]", "[--bogus]"]) == ["run has no flag --bogus"]
    assert problems_of("make", ["demo", "VERBOSE=1"]) == [] and problems_of("make", ["deploy"]) != []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(page.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def doc_links() -> list[tuple[Path, str]]:
    out = []
    for page in PAGES:
        prose = INLINE.sub("", _prose(page.read_text()))
        out += [(page, target) for target in LINK.findall(prose)]
    return out


def test_slugs_follow_github():
    assert slug("Soft labels: hard vs soft vs both (2026-11-29, issue #18)") == \
        "soft-labels-hard-vs-soft-vs-both-2026-11-29-issue-18"
    assert slug("The real base, offline (`scenefit standin-model`)") == "the-real-base-offline-scenefit-standin-model"
    assert slug("`scenefit run`: the pipeline as one resumable command") == \
        "scenefit-run-the-pipeline-as-one-resumable-command"


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    links = doc_links()
    assert len(links) > 20, "the link reader finds too few links"
    bad = []
    for page, target in links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO).as_posix()}: ({target})"
        if not file.exists():
            bad.append(f"{where}: no file {path}")
        elif not file.resolve().is_relative_to(REPO):
            bad.append(f"{where}: points outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{where}: no heading #{anchor} in {file.relative_to(REPO).as_posix()}")
    assert bad == [], "links to nothing:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_code_fences_are_closed(page):
    """An unclosed fence would hide the rest of the page from the checks above."""
    fences = re.findall(r"^(?:`{3,}|~{3,})", page.read_text(), re.M)
    assert len(fences) % 2 == 0, page
