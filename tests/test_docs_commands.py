"""No stale command in the docs: every ``python -m attnfast.…``, ``attnfast …``, ``make …`` and
``bench/….py`` command in README.md and docs/*.md (code blocks and inline code) names a module,
subcommand, Makefile target and script that exist, and each of its ``--flags`` is an option of that
command's real argparse parser; every ``--set key=value``, ``--row`` override and dotted config key
(``gan.projection``) names a key of attnfast.config.DEFAULTS, and every ``training/configs/`` path
is a config that loads.

The parsers are the commands' own: ``build_parser()`` where a module has one, else the parser that
``main()`` builds, caught at its ``parse_args`` call before anything runs."""
import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

from attnfast.config import DEFAULTS, load_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)```")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_0-9]*$")          # ARGS, NAME, DIR, COMMAND, KEY
FILE_SUFFIX = re.compile(r"\.(py|ya?ml|json|md|pt|pth|png|jpg|txt|pickle|npz|so|cpp|cu|h)$")


# ------------------------------------------------------------------ what the pages hold
def snippets(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every command-like piece of ``path``: each command of a fenced or indented
    code block (``\\`` continuations and indented ``[--flag]`` lines joined to their command) and
    each inline code span (which may wrap over lines)."""
    lines = path.read_text().splitlines()
    out, prose, in_fence, block = [], [], False, []

    def flush_block():
        command = None
        for number, text in block:
            text = re.sub(r"(^|\s)#\s.*$", "", text).rstrip()       # a shell comment
            if not text.strip():
                continue
            if command and (text.lstrip().startswith(("[", "--")) or command[1].endswith("\\")):
                command = (command[0], command[1].rstrip("\\") + " " + text.strip())
                continue
            if command:
                out.append(command)
            command = (number, text.strip())
        if command:
            out.append(command)
        block.clear()

    previous_blank = True
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            if in_fence:
                flush_block()
            in_fence = not in_fence
            previous_blank = False
            continue
        if in_fence:
            block.append((number, line))
        elif line.startswith("    ") and (block or previous_blank) and not re.match(r"\s*[-*] ", line):
            block.append((number, line))                            # an indented code block
        else:
            if block:
                flush_block()
            prose.append((number, line))
        previous_blank = not line.strip()
    flush_block()
    text = "\n".join(line for _, line in prose)
    starts = [number for number, _ in prose]
    for match in re.finditer(r"`([^`]+)`", text):
        out.append((starts[text.count("\n", 0, match.start())], " ".join(match.group(1).split())))
    return out


def split_commands(text: str) -> list[list[str]]:
    """Shell words of each command in ``text`` (split at ``&&``, ``;`` and pipes)."""
    commands = []
    for part in re.split(r"\s(?:&&|;|\|\||\|)\s", text):
        try:
            words = shlex.split(part, comments=False)
        except ValueError:
            words = part.split()
        words = [w for w in words if w]
        if words:
            commands.append(words)
    return commands


# ------------------------------------------------------------------ the real parsers
class _Caught(Exception):
    def __init__(self, parser):
        self.parser = parser


def parser_of_main(main) -> argparse.ArgumentParser:
    """The parser ``main([])`` builds, caught at its parse_args (nothing after it runs)."""
    original = argparse.ArgumentParser.parse_args

    def catch(self, *args, **kwargs):
        raise _Caught(self)

    argparse.ArgumentParser.parse_args = catch
    try:
        main([])
    except _Caught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{main} returned without parsing its arguments")


@cache
def module_options(module: str) -> frozenset[str] | None:
    """Option strings of ``python -m module``; None when the module does not exist."""
    if importlib.util.find_spec(module) is None:
        return None
    imported = importlib.import_module(module)
    if module == "attnfast":
        imported = importlib.import_module("attnfast.cli")
    factory = getattr(imported, "build_parser", None)
    parser = factory() if factory is not None else parser_of_main(imported.main)
    return frozenset(parser._option_string_actions)


@cache
def script_options(script: str) -> frozenset[str] | None:
    """Option strings of ``python bench/NAME.py``; None when the script does not exist."""
    path = ROOT / script
    if not path.is_file():
        return None
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return frozenset(parser_of_main(module.main)._option_string_actions)


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def config_key_problem(dotted: str) -> str | None:
    """None if ``section.key`` (or deeper) is a key of the defaults, else why not."""
    node = DEFAULTS
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return f"config key {dotted!r} does not exist"
        node = node[part]
    return None


# ------------------------------------------------------------------ checking one command
def flag_names(words: list[str]) -> list[str]:
    names = []
    for word in words:
        word = word.strip("[](),'\"")
        if word.startswith("--") and len(word) > 2:
            names.append(word.split("=", 1)[0])
    return names


def check_arguments(words: list[str], options: frozenset[str], what: str) -> list[str]:
    problems = [f"{what}: no option {flag}" for flag in flag_names(words) if flag not in options]
    for k, word in enumerate(words):
        value = None
        if word == "--set" and k + 1 < len(words):
            value = words[k + 1]
        elif word.startswith("--set="):
            value = word.split("=", 1)[1]
        if value is not None:
            key = value.split("=", 1)[0]
            if key != "section.key" and not any(PLACEHOLDER.match(p) for p in key.split(".")):
                problems += [f"{what}: {p}" for p in [config_key_problem(key)] if p]
        if word == "--row" and k + 1 < len(words) and "=" in words[k + 1]:
            for override in words[k + 1].split("=", 1)[1].split(";"):
                problems += [f"{what}: --row {p}" for p in [config_key_problem(override.split("=", 1)[0])] if p]
        if word == "--config" and k + 1 < len(words) and words[k + 1].startswith("training/configs/"):
            problems += config_file_problems(words[k + 1])
    return problems


def config_file_problems(path: str) -> list[str]:
    if not (ROOT / path).is_file():
        return [f"config file {path} does not exist"]
    load_config(ROOT / path)                           # raises on an unknown key
    return []


def check_command(words: list[str]) -> list[str]:
    """What is wrong with one command (empty when it is right, or not a command of this project)."""
    while words and re.match(r"^[A-Z_]+=", words[0]):                # VAR=value prefixes
        words = words[1:]
    if not words:
        return []
    program = words[0].rsplit("/", 1)[-1]
    if "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1].startswith("attnfast"):
        at = words.index("-m") + 1
        first, *more = words[at].split("|")
        if first == "attnfast":
            return check_cli(words[at + 1:])
        package = first.rsplit(".", 1)[0]
        problems = []
        for module in [first] + [f"{package}.{m}" for m in more if m not in ("...", "…")]:
            problems += check_module(module, words[at + 1:])
        return problems
    if program == "attnfast":
        return check_cli(words[1:])
    if program == "make":
        return [f"make: no target {t}" for t in words[1:]
                if not t.startswith("-") and "=" not in t and t not in make_targets()]
    scripts = [w for w in words[:2] if re.match(r"^bench/[\w.-]+\.py$", w)]
    if program.startswith("python") and scripts or words[0].startswith("bench/"):
        script = scripts[0] if scripts else words[0]
        if not re.match(r"^bench/[\w.-]+\.py$", script) or re.search(r"[A-Z]{2,}", script):   # NAME
            return []
        if script == words[-1] and not program.startswith("python"):      # a file named, not run
            return [] if (ROOT / script).is_file() else [f"{script} does not exist"]
        options = script_options(script)
        if options is None:
            return [f"{script} does not exist"]
        return check_arguments(words[words.index(script) + 1:], options, script)
    return []


def check_module(module: str, args: list[str]) -> list[str]:
    options = module_options(module)
    if options is None:
        return [f"no module {module}"]
    return check_arguments(args, options, f"python -m {module}")


def check_cli(args: list[str]) -> list[str]:
    from attnfast.cli import COMMANDS
    if not args or args[0].startswith("-"):
        return check_arguments(args, module_options("attnfast"), "attnfast")
    problems = []
    for command in args[0].split("|"):
        if PLACEHOLDER.match(command) or command in ("...", "…"):
            continue
        if command not in COMMANDS:
            problems.append(f"attnfast: no command {command}")
        elif command == "bench":
            problems += check_bench(args[1:])
        else:
            problems += check_module(COMMANDS[command][0], args[1:])
    return problems


def check_bench(args: list[str]) -> list[str]:
    if not args or args[0].startswith("-") or PLACEHOLDER.match(args[0]):
        return []
    script = f"bench/{args[0].removesuffix('.py').removesuffix('_bench')}_bench.py"
    options = script_options(script)
    if options is None:
        return [f"attnfast bench: no benchmark {args[0]} ({script})"]
    return check_arguments(args[1:], options, f"attnfast bench {args[0]}")


def dotted_key_problems(text: str) -> list[str]:
    """A code span that is a config key (``gan.projection: true``, ``damsm.steps``) must name one."""
    match = re.match(r"^([a-z_]+)\.([a-z_0-9.]+)(?=$|[:=\s])", text)
    if not match or match.group(1) not in DEFAULTS or not isinstance(DEFAULTS[match.group(1)], dict):
        return []
    if FILE_SUFFIX.search(match.group(0)) or " " in text.split(":")[0].split("=")[0]:
        return []
    return [p for p in [config_key_problem(match.group(0))] if p]


def all_problems() -> list[str]:
    problems = []
    for page in PAGES:
        for line, text in snippets(page):
            where = f"{page.relative_to(ROOT)}:{line}"
            found = dotted_key_problems(text)
            for path in re.findall(r"training/configs/[\w.-]+\.ya?ml", text):
                found += config_file_problems(path)
            for words in split_commands(text):
                found += check_command(words)
            problems += [f"{where}: {p}  [{text[:100]}]" for p in found]
    return problems


# ------------------------------------------------------------------ the tests
def test_every_command_in_the_docs_exists():
    problems = all_problems()
    assert not problems, "stale commands in the docs:\n" + "\n".join(problems)


def test_the_docs_show_commands_of_every_kind():
    """The collection itself works: each kind of command is found (and so checked)."""
    kinds = {"module": 0, "cli": 0, "make": 0, "bench": 0, "set": 0}
    for page in PAGES:
        for _, text in snippets(page):
            for words in split_commands(text):
                joined = " ".join(words)
                kinds["module"] += "-m attnfast." in joined
                kinds["cli"] += words[0].endswith("attnfast") and len(words) > 1
                kinds["make"] += words[0] == "make" and len(words) > 1
                kinds["bench"] += bool(re.search(r"bench/\w+\.py", joined))
                kinds["set"] += "--set" in words
    assert all(count >= 2 for count in kinds.values()), kinds


@pytest.mark.parametrize("command, expected", [
    ("python -m attnfast.train --no-such-flag", "no option --no-such-flag"),
    ("python -m attnfast.nothing --out x", "no module attnfast.nothing"),
    (".venv/bin/attnfast trian --out x", "no command trian"),
    ("attnfast bench nothing --quick", "no benchmark nothing"),
    ("attnfast bench serve --null-modle", "no option --null-modle"),
    ("make tset", "no target tset"),
    ("python bench/serve_bench.py --sizes 64 --bogus", "no option --bogus"),
    ("python bench/nothing_bench.py", "does not exist"),
    ("python -m attnfast.train --set gan.projektion=true", "config key 'gan.projektion'"),
    ("python -m attnfast.train --config training/configs/nothing.yaml", "config file"),
    ("python bench/ablation.py --row \"x=gan.loss=hinge;gan.nope=1\"", "config key 'gan.nope'"),
])
def test_a_stale_command_is_caught(command, expected):
    problems = [p for words in split_commands(command) for p in check_command(words)]
    assert any(expected in p for p in problems), problems


def test_right_commands_pass():
    for command in ("python -m attnfast.serve --null-model 64 [--max-batch 64]", ".venv/bin/attnfast --version",
                    "attnfast bench serve --null-model --seconds 5", "make gpu-check OUT=$OUT",
                    "torchrun --nproc_per_node 4 -m attnfast.train --stage gan --sync-bn",
                    "python -m attnfast.train|sample|... ARGS", "attnfast COMMAND ARGS"):
        problems = [p for words in split_commands(command) for p in check_command(words)]
        assert not problems, (command, problems)
    assert dotted_key_problems("gan.projection: true") == [] and dotted_key_problems("train.py") == []
    assert dotted_key_problems("dataset.gird: 1")
