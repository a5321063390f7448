"""The documentation's code holds: every code block in README.md and docs/*.md is checked.

- ``python`` blocks are type-checked by ``mypy --strict`` and pyright (strict), one run of
  each checker over all blocks, each block its own module, as a reader would paste it. Two
  comments shape a block: ``<!-- check: prelude -->`` before a block makes it the shared
  declarations of every later python block of its page (as docs/typing.md says "the examples
  share these declarations"); a line whose comment starts ``# error`` (or says "both
  reject") must be an error in both checkers, one saying "mypy rejects" or "pyright
  rejects" in that checker (documented rejections), and every other line must be clean. A user's own
  modules the blocks import (``contracts``, ``handlers``) are the stand-ins in
  tests/docs_support/.
- ``json`` blocks parse; ``yaml`` blocks parse (CloudFormation tags allowed).
- ``sh`` blocks name real commands: ``taskhop`` command lines parse with taskhop's own
  argument parser (without running), ``make`` targets exist, other programs are known tools.
- ``text`` blocks are output and drawings, not code.
- ``<!-- not-checked: reason -->`` right before a block exempts it; the exemptions are listed.

The quick start program and the README's quick start also run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "examples" / "quickstart.py"
README = ROOT / "README.md"
SUPPORT = Path(__file__).resolve().parent / "docs_support"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [
    ROOT / d / "src" for d in ("static_contracts", "sdk", "backends", "lambda_worker", "infra")
]


def run_python(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the interpreter of this test session from the repository root."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def readme_quick_start() -> str:
    """The first python code block after the README's ``## Quick start`` heading."""
    text = README.read_text(encoding="utf-8")
    _, heading, rest = text.partition("\n## Quick start\n")
    assert heading, "README.md has no '## Quick start' heading"
    block = re.search(r"```python\n(.*?)```", rest, re.DOTALL)
    assert block is not None, "no python code block after '## Quick start'"
    return block.group(1)


def test_quickstart_example_runs_and_narrates_each_step() -> None:
    """``docs/examples/quickstart.py`` (the in-process tour) exits 0 and shows every step."""
    done = run_python(["-W", "error", str(QUICKSTART)])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[worker] send-email attempt 2/3 to alice@example.com" in out
    assert "status: succeeded, after 2 attempts" in out
    assert "ValidationError: invalid input for task 'resize'" in out
    assert "    input.width: " in out
    assert "TaskRejected: ValidationError: invalid input for task 'send-email'" in out
    assert "    input.to: expected string, got integer" in out
    assert "second job duplicate_of first job: True" in out
    assert "Resized(key='thumbs/256/cat.png', width=256)" in out
    assert "Resized(key='thumbs/640/dog.png', width=640)" in out
    assert out.rstrip().endswith("done")


def test_readme_quick_start_runs() -> None:
    """The README's quick start code block runs as written and prints a typed result."""
    code = readme_quick_start()
    assert "dispatch(" in code
    assert ".result(" in code
    done = run_python(["-W", "error", "-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("EmailSent(message_id='msg-")


def test_make_demo_runs_the_real_flow_and_accounts_for_every_job() -> None:
    """``make demo``: dev stack, static-contract producer, summary, and nothing left running."""
    env = {**os.environ, "DEMO_JOBS": "40"}
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every job accounted for: True" in done.stdout
    assert "dev stack stopped" in done.stdout


# -- every code block ------------------------------------------------------------------------

FENCE = re.compile(r"^([ \t]*)```([^\s`]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_CHECKED = re.compile(r"<!--\s*not-checked:\s*(.*?)\s*-->\s*$")
PRELUDE = re.compile(r"<!--\s*check:\s*prelude\s*-->\s*$")
EXPECTED = {
    re.compile(r"#\s*error\b|\bboth (checkers )?reject"): frozenset({"mypy", "pyright"}),
    re.compile(r"\bmypy rejects\b"): frozenset({"mypy"}),
    re.compile(r"\bpyright rejects\b"): frozenset({"pyright"}),
}
"""A comment saying a line is rejected, and by which checkers."""


def comments(source: str) -> dict[int, str]:
    """Each line's comment (1-based), found by Python's tokenizer: not a "#" in a string."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):  # not Python: the checkers will say so
        return {}
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def expected_by(comment: str) -> frozenset[str]:
    """The checkers a comment says reject its line (none for any other comment)."""
    found: frozenset[str] = frozenset()
    for pattern, checkers in EXPECTED.items():
        if comment and pattern.search(comment):
            found |= checkers
    return found


SHARED_NAMES = (
    "# pyright: reportUnusedImport=false, reportUnusedClass=false,"
    " reportUnusedFunction=false, reportUnusedVariable=false"
)
PYTHON, JSON, YAML, SHELL, TEXT = "python", "json", "yaml", "sh", "text"
LANGUAGES = {
    "python": PYTHON,
    "py": PYTHON,
    "json": JSON,
    "yaml": YAML,
    "yml": YAML,
    "sh": SHELL,
    "bash": SHELL,
    "shell": SHELL,
    "text": TEXT,
}
TOOLS = frozenset(
    [
        "aws",
        "cat",
        "cd",
        "cdk",
        "cp",
        "curl",
        "docker",
        "echo",
        "eval",
        "export",
        "git",
        "jq",
        "ls",
        "mkdir",
        "mv",
        "npm",
        "pip",
        "pip3",
        "pytest",
        "python",
        "python3",
        "rm",
        "sam",
        "unzip",
        "uv",
        "zip",
    ]
)
"""Programs a shell block may run besides ``taskhop`` and ``make`` (checked by name only)."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    doc: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    exempt: str | None  # the not-checked reason
    prelude: bool

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced code blocks of a page, in order, with the comment before each."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        indent = match.group(1)
        code = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in match.group(3).splitlines(keepends=True)
        )
        exempt = NOT_CHECKED.search(before)
        found.append(
            Block(
                doc=doc,
                line=text.count("\n", 0, match.start()) + 1,
                language=match.group(2).lower(),
                code=code,
                exempt=exempt.group(1) if exempt else None,
                prelude=bool(PRELUDE.search(before)),
            )
        )
    return found


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


@dataclass
class Module:
    """A python block as a module file: the page's prelude, then the block."""

    path: Path
    lines: list[tuple[Block, int]]  # per module line: its block and line in the page
    expected: dict[int, frozenset[str]]  # module lines documented as errors, and by whom


def python_modules(tmp: Path) -> list[Module]:
    """Write every checked python block as a module under ``tmp``; the support beside them."""
    for support in SUPPORT.glob("*.py"):
        shutil.copy(support, tmp / support.name)
    modules = []
    for doc in DOCS:
        prelude: list[tuple[str, Block, int]] = []
        for block in blocks(doc):
            if LANGUAGES.get(block.language) != PYTHON or block.exempt is not None:
                continue
            own = [
                (text, block, block.line + 1 + i) for i, text in enumerate(block.code.splitlines())
            ]
            if block.prelude:  # a later prelude continues the earlier ones
                prelude.extend(own)
            body = prelude if block.prelude else prelude + own
            if prelude:
                # shared declarations: a block need not use every name they import or define
                body = [(SHARED_NAMES, block, block.line), *body]
            text = "\n".join(t for t, _, _ in body) + "\n"
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            name = re.sub(r"\W", "_", f"doc_{doc.stem}_{block.line}_{digest}").lower()
            path = tmp / f"{name}.py"
            path.write_text(text, encoding="utf-8")
            notes = comments(text)
            expected = {
                n: expected_by(notes[n])
                for n, (_, b, _) in enumerate(body, start=1)
                if b is block and n in notes and expected_by(notes[n])
            }
            modules.append(Module(path, [(b, line) for _, b, line in body], expected))
    return modules


@dataclass(frozen=True)
class Diagnostic:
    checker: str
    path: Path
    line: int
    message: str


def run_mypy(files: list[Path]) -> list[Diagnostic]:
    """One ``mypy --strict`` run over every module (the project's configuration and cache)."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml",
         "--no-error-summary", "--show-absolute-path", *map(str, files)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        # the blocks' own folder is an import root: `import contracts` finds the stand-in
        env={**os.environ, "MYPYPATH": str(files[0].parent)},
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    found = []
    for line in done.stdout.splitlines():
        match = re.match(r"(.+?):(\d+): error: (.*)", line)
        if match:
            found.append(Diagnostic("mypy", Path(match[1]), int(match[2]), match[3]))
    return found


def run_pyright(tmp: Path) -> list[Diagnostic]:
    """One strict pyright run over every module, configured as the project's pyproject is."""
    config = {
        "include": ["."],
        "typeCheckingMode": "strict",
        "pythonVersion": "3.11",
        "venvPath": str(ROOT),
        "venv": ".venv",
        "extraPaths": [str(s) for s in SOURCES],
        "enableTypeIgnoreComments": False,
        "reportUnnecessaryIsInstance": False,
    }
    (tmp / "pyrightconfig.json").write_text(json.dumps(config))
    pyright = Path(sys.executable).parent / "pyright"
    done = subprocess.run(
        [str(pyright), "--outputjson", "-p", str(tmp / "pyrightconfig.json")],
        capture_output=True, text=True, cwd=tmp, timeout=600,
    )  # fmt: skip
    report = json.loads(done.stdout)
    return [
        Diagnostic("pyright", Path(d["file"]), d["range"]["start"]["line"] + 1, d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]


BLOCKS_DIR = ROOT / "build" / "docs_blocks"
"""Where the blocks are written: one fixed path, and module names that carry a hash of their
text, because mypy's cache is keyed by module name and reports a module it met before at its
old path. The project's cache is shared with ``make typecheck``: cold, the CDK's stubs take
mypy two minutes; warm, the whole run takes a second."""


@pytest.fixture(scope="module")
def type_errors() -> dict[str, list[str]]:
    """Each page's type errors, as ``page:line [checker] message``, from one run per checker."""
    tmp = BLOCKS_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    modules = python_modules(tmp)
    by_path = {m.path.resolve(): m for m in modules}
    diagnostics = run_mypy([m.path for m in modules]) + run_pyright(tmp)
    problems: dict[str, list[str]] = {str(d.relative_to(ROOT)): [] for d in DOCS}
    hit: set[tuple[Path, int, str]] = set()
    for d in diagnostics:
        module = by_path.get(d.path.resolve())
        if module is None:  # a support module: a problem of this test's own
            problems.setdefault("tests/docs_support", []).append(f"{d.path}:{d.line} {d.message}")
            continue
        hit.add((module.path.resolve(), d.line, d.checker))
        if d.checker in module.expected.get(d.line, ()):
            continue
        block, line = module.lines[d.line - 1]
        page = str(block.doc.relative_to(ROOT))
        message = d.message.splitlines()[0][:200]
        problems[page].append(f"{page}:{line} [{d.checker}] {message}")
    for module in modules:
        for n, checkers in sorted(module.expected.items()):
            block, line = module.lines[n - 1]
            for checker in sorted(checkers):
                if (module.path.resolve(), n, checker) not in hit:
                    page = str(block.doc.relative_to(ROOT))
                    problems[page].append(f"{page}:{line} [{checker}] documented error not raised")
    return {page: sorted(set(found)) for page, found in problems.items()}


@pytest.mark.timeout(300)  # the checkers' first run on a cold cache
@pytest.mark.parametrize("page", [str(d.relative_to(ROOT)) for d in DOCS])
def test_python_blocks_type_check(page: str, type_errors: dict[str, list[str]]) -> None:
    """Every python block of the page type-checks in both strict checkers, as documented."""
    assert type_errors[page] == []


def test_docs_support_modules_type_check(type_errors: dict[str, list[str]]) -> None:
    """The stand-ins for a user's own modules are clean themselves."""
    assert type_errors.get("tests/docs_support", []) == []


def yaml_loader() -> type[Any]:
    """A safe YAML loader that accepts CloudFormation's short-form tags (``!Ref``, ...)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        assert isinstance(node, yaml.MappingNode)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    return Loader


def shell_commands(code: str) -> Iterator[list[str]]:
    """Each simple command of a shell block as words, ``$(...)`` substitutions included."""
    joined = re.sub(r"\\\n", " ", code)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        yield from _commands(line)


def _commands(line: str) -> Iterator[list[str]]:
    depth, start, outer = 0, 0, []
    i = 0
    while i < len(line):  # lift out $( ... ) substitutions, checked as commands of their own
        if line.startswith("$(", i):
            if depth == 0:
                outer.append(line[start:i] + "SUBSTITUTION")
                start = i + 2
            depth += 1
            i += 2
            continue
        if line[i] == ")" and depth:
            depth -= 1
            if depth == 0:
                yield from _commands(line[start:i])
                start = i + 1
        i += 1
    outer.append(line[start:])
    lexer = shlex.shlex("".join(outer), posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set("|&;<>"):
            if words:
                yield words
            words = []
            if ">" in token or "<" in token:
                words = ["<redirect>"]
        else:
            words.append(token)
    if words:
        yield words


def check_taskhop(argv: list[str]) -> str | None:
    """Parse a ``taskhop`` command line with taskhop's own parser, without running it.

    A line without ``--app`` is read as the docs mean it, with ``$TASKHOP_APP`` set.
    """
    problem = _parse_taskhop(argv)
    if problem and problem.endswith("required: --app"):
        problem = _parse_taskhop([*argv, "--app", "module:app"])
    return problem


def _parse_taskhop(argv: list[str]) -> str | None:
    import contextlib

    from taskhop.sdk._cli import main

    class Parsed(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def parse_only(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)
        raise Parsed

    error = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_only  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
    except Parsed:
        return None
    except SystemExit as exc:
        return None if exc.code == 0 else error.getvalue().strip().splitlines()[-1]
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return "ran instead of parsing"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


def check_shell(block: Block) -> list[str]:
    """What is wrong with a shell block's commands (nothing is run)."""
    problems = []
    targets = make_targets()
    for words in shell_commands(block.code):
        words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)] or words
        name, args = words[0], words[1:]
        if name == "<redirect>":
            continue
        if name == "taskhop":
            # a placeholder such as [--dry-run] marks an optional flag
            argv = [a.strip("[]") for a in args if a.strip("[]")]
            problem = check_taskhop(argv)
            if problem:
                problems.append(f"{block.where}: taskhop {' '.join(args)}: {problem}")
        elif name == "make":
            for target in (a for a in args if not a.startswith("-") and "=" not in a):
                if target not in targets:
                    problems.append(f"{block.where}: make {target}: no such target")
        elif name not in TOOLS:
            problems.append(f"{block.where}: {name}: not a known command")
    return problems


@pytest.mark.parametrize("page", [str(d.relative_to(ROOT)) for d in DOCS])
def test_data_and_shell_blocks_hold(page: str) -> None:
    """json and yaml blocks parse; shell blocks name real commands, options and targets."""
    import yaml

    problems = []
    for block in blocks(ROOT / page):
        kind = LANGUAGES.get(block.language)
        if block.exempt is not None or kind in (PYTHON, TEXT):
            continue
        if kind is None:
            problems.append(f"{block.where}: no check for {block.language!r} blocks")
        elif kind == JSON:
            try:
                json.loads(block.code)
            except json.JSONDecodeError as exc:
                problems.append(f"{block.where}: not JSON: {exc}")
        elif kind == YAML:
            try:
                list(yaml.load_all(block.code, Loader=yaml_loader()))
            except yaml.YAMLError as exc:
                problems.append(f"{block.where}: not YAML: {exc}")
        else:
            problems.extend(check_shell(block))
    assert problems == []


def test_exempt_blocks_say_why(record_property: Any) -> None:
    """Every block the checks skip says why; the list is in the test's report."""
    exempt = [b for b in all_blocks() if b.exempt is not None]
    listing = [f"{b.where} ({b.language}): {b.exempt}" for b in exempt]
    record_property("not_checked", listing)
    print(f"{len(exempt)} of {len(all_blocks())} code blocks not checked:", *listing, sep="\n  ")
    assert all(b.exempt for b in exempt), listing
    # the checks above found blocks to check (a broken extractor would pass them all)
    checked = [b for b in all_blocks() if b.exempt is None and LANGUAGES.get(b.language) != TEXT]
    assert len({b.doc for b in checked}) >= 3
    assert any(LANGUAGES.get(b.language) == PYTHON for b in checked if b.doc.name == "deploy.md")


def test_block_checks_catch_what_they_claim(tmp_path: Path) -> None:
    """The shell check refuses a wrong option, target or program; the YAML loader takes !Ref."""

    def shell(code: str) -> list[str]:
        return check_shell(Block(README, 1, "sh", code + "\n", None, False))

    [wrong] = shell("taskhop infra render --formt sam")
    assert "unrecognized arguments: --formt sam" in wrong
    assert shell("make no-such-target") == ["README.md:1: make no-such-target: no such target"]
    assert shell("frobnicate --now") == ["README.md:1: frobnicate: not a known command"]
    [inner] = shell('echo "$(taskhop infra render --nope)" | jq -r .x')
    assert "--nope" in inner
    assert shell("taskhop infra render --format template > t.yaml && make test") == []
    assert shell("taskhop tasks") == []  # --app from $TASKHOP_APP, as the docs say
    assert shell('eval "$(taskhop dev --print-env)"') == []  # a builtin, and its taskhop
    [inner] = shell('eval "$(taskhop dev --print-envv)"')
    assert "--print-envv" in inner
    import yaml

    assert yaml.load("a: !Ref B", Loader=yaml_loader()) == {"a": "B"}


def test_python_modules_take_the_prelude_and_documented_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prelude block heads later modules; ``# error`` lines are expected; exempt ones skipped."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- check: prelude -->\n```python\nx = 1\n```\n\n"
        "```python\ny: str = x  # error: int is not str\n```\n\n"
        "<!-- not-checked: a fragment -->\n```python\nz +\n```\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [page])
    out = tmp_path / "out"
    out.mkdir()
    prelude, second = python_modules(out)
    assert prelude.path.read_text() == SHARED_NAMES + "\nx = 1\n"
    assert (
        second.path.read_text() == SHARED_NAMES + "\nx = 1\ny: str = x  # error: int is not str\n"
    )
    assert second.expected == {3: {"mypy", "pyright"}}
    assert expected_by("# pyright accepts; mypy rejects") == {"mypy"}
    assert comments('s = "# error"\nt = 1  # error: no\n') == {2: "# error: no"}
    assert [line for _, line in second.lines] == [6, 3, 7]  # the page's lines
    assert (out / "contracts.py").exists()
    [exempt] = [b for b in blocks(page) if b.exempt]
    assert (exempt.exempt, exempt.line) == ("a fragment", 11)


def test_a_later_prelude_continues_the_earlier_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second prelude is checked with the first before it (it may use the first's names)."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- check: prelude -->\n```python\nx = 1\n```\n\n"
        "<!-- check: prelude -->\n```python\ny = x + 1\n```\n\n"
        "```python\nz = x + y\n```\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [page])
    out = tmp_path / "out"
    out.mkdir()
    _, second, third = python_modules(out)
    assert second.path.read_text() == SHARED_NAMES + "\nx = 1\ny = x + 1\n"
    assert third.path.read_text() == SHARED_NAMES + "\nx = 1\ny = x + 1\nz = x + y\n"
