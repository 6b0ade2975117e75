"""The documentation stays true to the repository and to the command line.

README.md, ARCHITECTURE.md and docs/*.md: every relative link points at a file of the repository
and every `#anchor` at a heading of its file (GitHub's slugs); every option of a `rag …` command
line they show (an inline code span or a shell block) is an option of that command in the Typer
app, and so is every option in the `option` table of a `rag COMMAND` section. docs/commands.md
documents every command and option the app has; docs/configuration.md every settings key.

Only `rag` command lines are checked: options of pip, pytest, llama-server, bench scripts and the
like are left alone.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main

from conftest import REPO

USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCS = [*USER_DOCS, REPO / "ARCHITECTURE.md"]  # links and options are checked in all of them
SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh"}
GROUP = ""  # the scope of the options that go before the command


@dataclass(frozen=True)
class Snippet:
    line: int
    text: str


@dataclass
class Markdown:
    """A Markdown file cut into what the checks need (fenced blocks kept apart from prose)."""

    headings: list[Snippet]
    paragraphs: list[Snippet]  # prose blocks, split at blank lines
    blocks: list[tuple[str, Snippet]]  # (info string, contents) of each fenced block


@cache
def parse(path: Path) -> Markdown:
    doc = Markdown([], [], [])
    fence, lang, start, body, para = "", "", 0, [], []

    def end_paragraph() -> None:
        if para:
            doc.paragraphs.append(Snippet(para[0][0], "\n".join(text for _, text in para)))
            para.clear()

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opening = re.match(r"\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence:
            if opening and opening.group(1).startswith(fence) and not line.strip().strip(fence[0]):
                doc.blocks.append((lang, Snippet(start, "\n".join(body))))
                fence = ""
            else:
                body.append(line)
        elif opening:
            end_paragraph()
            fence, lang, start, body = opening.group(1), opening.group(2).lower(), number + 1, []
        elif not line.strip():
            end_paragraph()
        else:
            heading = re.match(r"\s{0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$", line)
            if heading:
                end_paragraph()
                doc.headings.append(Snippet(number, heading.group(1)))
                doc.paragraphs.append(Snippet(number, line))
            else:
                para.append((number, line))
    end_paragraph()
    return doc


CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def code_spans(snippet: Snippet) -> list[Snippet]:
    return [Snippet(snippet.line + snippet.text[:m.start()].count("\n"), " ".join(m.group(2).split()))
            for m in CODE_SPAN.finditer(snippet.text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, without punctuation other
    than `-` and `_`, each space a `-` (github-slugger)."""
    parts = re.split(r"(`+[^`]*`+)", heading)
    text = ""
    for part in parts:
        if part.startswith("`"):
            text += part.strip("`")
        else:
            part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)  # links and images: their text
            part = re.sub(r"<[^>]+>", "", part)  # HTML tags
            part = re.sub(r"\*+|(?<!\w)_+|_+(?!\w)", "", part)  # emphasis
            text += part
    keep = "".join(c for c in text.lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return keep.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in parse(path).headings:
        base = slug(heading.text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s|$)", re.M)


def links(path: Path) -> list[Snippet]:
    found = []
    for para in parse(path).paragraphs:
        prose = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), para.text)
        for m in [*LINK.finditer(prose), *REFERENCE.finditer(prose)]:
            found.append(Snippet(para.line + prose[:m.start()].count("\n"), m.group(1)))
    return found


def name(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_relative_links_point_at_files_and_headings(path: Path) -> None:
    broken = []
    for link in links(path):
        target, _, anchor = link.text.partition("#")
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|//", target):
            continue  # https:, mailto:, …
        file = (path.parent / target).resolve() if target else path
        where = f"{name(path)}:{link.line}: ({link.text})"
        if not file.is_relative_to(REPO):
            broken.append(f"{where} leaves the repository")
        elif not file.exists():
            broken.append(f"{where} {target} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{where} {name(file)} has no heading #{anchor}; it has: "
                          + ", ".join(sorted(anchors(file))))
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Warm mode: `rag serve`", "warm-mode-rag-serve"),
    ("`rag index [PATH...]`", "rag-index-path"),
    ("`rag eval QUESTIONS.jsonl`", "rag-eval-questionsjsonl"),
    ("A llama.cpp server", "a-llamacpp-server"),
    ("Logs, timings and traces", "logs-timings-and-traces"),
    ("Global options: `rag [OPTIONS] COMMAND`", "global-options-rag-options-command"),
    ("**Bold** and `snake_case` — here", "bold-and-snake_case--here"),
])
def test_anchor_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


# --- options ---------------------------------------------------------------------------------

@cache
def app_options() -> dict[str, dict[str, Any]]:
    """Option name -> its click parameter (None for --help), for the group (key "") and for each
    command of the Typer app (a command group's commands as "GROUP COMMAND")."""
    from rag_cli.cli.app import app

    group = typer.main.get_command(app)  # a click group (typer vendors its own click)

    def options(command: Any) -> dict[str, Any]:
        context = typer.Context(command)
        names = {opt: param for param in command.get_params(context) if param.param_type_name == "option"
                 for opt in (*param.opts, *param.secondary_opts)}
        return names | dict.fromkeys(command.get_help_option_names(context))

    found = {GROUP: options(group)} | {cmd: options(c) for cmd, c in group.commands.items()}
    for cmd, c in group.commands.items():  # a command group (`rag log`): "log stats" and the rest
        found |= {f"{cmd} {sub}": options(s) for sub, s in getattr(c, "commands", {}).items()}
    return found


def takes_value(scope: str, flag: str) -> bool:
    param = app_options()[scope].get(flag)
    return param is not None and not param.is_flag and not param.count


COMMAND_START = {"|", "||", "&&", ";", "&", "(", "$(", "`", "!", "{", "do", "then", "else",
                 "time", "until", "while", "if", "exec", "nohup", "env"}
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text.replace("\\|", "|"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose-like text
        return text.split()


def rag_invocations(text: str) -> list[list[str]]:
    """The arguments of each `rag` in command position in one shell line."""
    found, words, start = [], tokens(text), True
    for i, word in enumerate(words):
        if start and word == "rag":
            args = []
            for arg in words[i + 1:]:
                if set(arg) <= set("();<>|&"):
                    break
                args.append(arg)
            found.append(args)
        start = word in COMMAND_START or (start and re.fullmatch(r"[A-Za-z_]\w*=.*", word) is not None) \
            or set(word) <= set("();<>|&")
    return found


def check_invocation(args: list[str]) -> list[str]:
    """What is wrong with `rag ARGS`: unknown commands and options."""
    options, problems, scope, i = app_options(), [], GROUP, 0
    while i < len(args):
        arg = args[i]
        flag = arg.split("=", 1)[0]
        if FLAG.fullmatch(flag):
            if flag not in options[scope]:
                problems.append(f"{'rag' if scope == GROUP else 'rag ' + scope} has no option {flag}")
            elif scope == GROUP and "=" not in arg and takes_value(GROUP, flag):
                i += 1  # its value
        elif f"{scope} {arg}" in options:  # a command of a command group
            scope = f"{scope} {arg}"
        elif scope == GROUP:
            if arg in options:
                scope = arg
            elif re.fullmatch(r"[a-z][a-z-]*", arg):
                problems.append(f"rag has no command {arg!r}")
                return problems
            else:
                return problems  # a placeholder such as COMMAND: no command to check against
        i += 1
    return problems


def command_lines(path: Path) -> list[Snippet]:
    """Every `rag …` line: inline code spans, shell blocks, and `$ ` lines of other blocks."""
    lines = [span for para in parse(path).paragraphs for span in code_spans(para)]
    for lang, block in parse(path).blocks:
        if lang not in SHELL_LANGS | {"", "text"}:
            continue
        text = re.sub(r"\\\n\s*", " ", block.text)
        for offset, line in enumerate(text.splitlines()):
            prompt = re.match(r"\s*\$\s+", line)
            if lang in SHELL_LANGS or prompt:
                lines.append(Snippet(block.line + offset, line[prompt.end():] if prompt else line))
    return lines


def option_tables(path: Path) -> dict[str, list[Snippet]]:
    """scope -> the options in the first column of each `| option | meaning |` table in a section
    whose heading names `rag COMMAND` (`rag GROUP COMMAND`; or `rag [OPTIONS]`: the group)."""
    tables: dict[str, list[Snippet]] = {}
    scope = None
    for para in parse(path).paragraphs:
        heading = re.match(r"\s{0,3}#{1,6}\s", para.text)
        if heading:
            scope = None
            for span in code_spans(para):
                for args in rag_invocations(span.text):
                    scope = " ".join(args[:2]) if " ".join(args[:2]) in app_options() else \
                        args[0] if args and args[0] in app_options() else GROUP
            continue
        rows = para.text.splitlines()
        if scope is None or not re.match(r"\|\s*option\s*\|", rows[0]):
            continue
        for offset, row in enumerate(rows[2:], 2):
            first_cell = re.split(r"(?<!\\)\|", row)[1]
            for span in code_spans(Snippet(para.line + offset, first_cell)):
                tables.setdefault(scope, []).extend(Snippet(span.line, flag) for flag in FLAG.findall(span.text))
    return tables


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_rag_options_named_in_the_docs_exist(path: Path) -> None:
    options = app_options()
    problems = [f"{name(path)}:{line.line}: `{line.text}`: {problem}"
                for line in command_lines(path) for args in rag_invocations(line.text)
                for problem in check_invocation(args)]
    for scope, flags in option_tables(path).items():
        problems += [f"{name(path)}:{flag.line}: option table of `rag {scope}`: no option {flag.text}"
                     for flag in flags if flag.text not in options[scope]]
    assert not problems, "options the app does not have:\n" + "\n".join(problems)


def test_the_option_check_catches_a_wrong_option() -> None:
    """The check above is not vacuous, and leaves other programs' options alone."""
    assert rag_invocations('cd d && RAG_X=1 rag -v ask "q" --json | head') == [["-v", "ask", "q", "--json"]]
    assert check_invocation(["ask", "q", "--json", "--where", "path=a/*"]) == []
    assert check_invocation(["ask", "q", "--no-such-flag"]) == ["rag ask has no option --no-such-flag"]
    assert check_invocation(["index", "--ful"]) == ["rag index has no option --ful"]
    assert check_invocation(["--log-format", "json", "aks"]) == ["rag has no command 'aks'"]
    assert check_invocation(["ask", "--config", "x.toml"]) == ["rag ask has no option --config"]
    assert rag_invocations("pip install --no-deps -e . && pytest -q") == []
    assert rag_invocations("llama-server -m model.gguf --host 127.0.0.1 --no-repack") == []
    assert rag_invocations("rag-cli crashed in llama.cpp: run rag doctor") == []


def test_the_command_reference_documents_every_command_and_option() -> None:
    documented = {scope: {flag.text for flag in flags}
                  for scope, flags in option_tables(REPO / "docs" / "commands.md").items()}
    missing = []
    for scope, options in app_options().items():
        params = {opt for opt, param in options.items() if param is not None and not param.hidden}
        label = "rag" if scope == GROUP else f"rag {scope}"
        missing += [f"`{label}`: {opt}" for opt in sorted(params - documented.get(scope, set()))]
    assert not missing, "docs/commands.md has no option-table row for:\n" + "\n".join(missing)


def test_the_settings_table_lists_every_key() -> None:
    example = tomllib.loads((REPO / ".rag.toml.example").read_text(encoding="utf-8"))
    keys = {f"{section}.{key}" for section, values in example.items() for key in values}
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", text, re.M))
    assert keys - table == set(), "settings missing from docs/configuration.md's table"
    assert table - keys == set(), "docs/configuration.md's table lists settings that do not exist"
