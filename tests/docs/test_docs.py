"""Every example in README.md and docs/*.md is run: matrices are planned, profiles validated,
`bench` command lines parsed by bench's own parser (the cheap ones run), Python blocks executed;
the README stays a front door (at most 200 lines) and the site builds with `mkdocs build --strict`.

A YAML block that is not a whole matrix says what it is in an HTML comment on the line before it:
``<!-- fragment: stand_in of matrices/M.yaml -->`` (checked inside that matrix),
``<!-- fragment: skip (reason) -->`` or ``<!-- profile: slurm/P.yaml -->`` (the very file, shown); a
synopsis with placeholders (MATRIX, [--only PATTERN]) is marked ``<!-- synopsis -->``."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.cli import build_parser
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^\s*```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(\w+)(?::\s*(.*?))?\s*-->$")
CHEAP = ("plan",)
"""Subcommands cheap enough to run for real (plan imports neither torch nor timm)."""


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    lang: str
    text: str
    marker: tuple[str, str] | None

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, each with the marker comment just before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: a code block that never closes"
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        out.append(Block(path, start + 1, opening.group(1), "\n".join(body) + "\n",
                         (marker.group(1), marker.group(2) or "") if marker else None))
        i += 1
    return out


ALL = [block for path in [README, *PAGES] for block in blocks(path)]


def of(lang: str) -> list[Block]:
    return [block for block in ALL if block.lang == lang]


def commands(block: Block) -> list[list[str]]:
    """The `bench ...` commands of a shell block: comments dropped, `a && b` split."""
    out = []
    for line in block.text.splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command[:1] == ["bench"]:
                    out.append(command[1:])
                command = []
            else:
                command.append(word)
    return out


SH_COMMANDS = [(block, argv) for block in of("sh") for argv in commands(block)]


def bench_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_the_docs_have_examples_of_every_kind() -> None:
    """The extraction finds what the docs hold, so the tests below cannot pass on nothing."""
    assert len(of("yaml")) >= 4 and len(of("python")) >= 1 and len(SH_COMMANDS) >= 20
    assert all(block.lang in {"sh", "yaml", "python", "text"} for block in ALL), \
        [f"{b}: ```{b.lang}" for b in ALL if b.lang not in {"sh", "yaml", "python", "text"}]


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the guide belongs in docs/"
    first = blocks(README)[0]
    assert first.lang == "sh" and first.line == 3, "README.md starts with the two commands"
    assert commands(first) == [["run", "matrices/demo.yaml"]]
    assert first.text.splitlines()[1].endswith("pip install -e '.[test]' && python -m pytest")


def test_readme_links_resolve_in_the_repository() -> None:
    """Links and images of the README are relative paths that exist (so they work on GitHub)."""
    targets = re.findall(r"\]\(([^)#\s]+)", README.read_text(encoding="utf-8"))
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing
    png = ROOT / "docs" / "img" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000


def _plan_file(path: Path) -> str:
    done = bench_cli("plan", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("block", [b for b in of("yaml") if b.marker is None], ids=str)
def test_matrix_blocks_plan(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(block.text)
    name = yaml.safe_load(block.text)["name"]
    assert re.search(rf"^{re.escape(name)}: \d+ cells", _plan_file(path), re.M)


@pytest.mark.parametrize("block", [b for b in of("yaml") if b.marker is not None], ids=str)
def test_marked_yaml_blocks(block: Block, tmp_path: Path) -> None:
    kind, what = block.marker
    snippet = yaml.safe_load(block.text)
    if kind == "profile":
        from bench.executors.profile import Profile
        from bench.yaml_input import validate

        assert snippet == yaml.safe_load((ROOT / what).read_text()), f"{block} differs from {what}"
        validate(Profile, snippet, str(block), "cluster profile")
    elif kind == "fragment" and what.startswith("skip"):
        pytest.skip(f"{block}: {what}")
    elif kind == "fragment" and what.startswith("stand_in of "):
        from bench.report.paper_figures import load_paper
        from bench.report.stand_in import check_stand_in

        matrix = yaml.safe_load((ROOT / what.removeprefix("stand_in of ")).read_text())
        check_stand_in(snippet["stand_in"], str(block), load_paper(matrix["paper"]))
        stages = {selector.get("stage") for selector in snippet["stand_in"].values()}
        assert stages <= set(matrix["stages"]), f"{block}: stages {stages - set(matrix['stages'])} are not in {what}"
        matrix["stand_in"] = snippet["stand_in"]
        path = tmp_path / "with-stand-in.yaml"
        path.write_text(yaml.safe_dump(matrix, sort_keys=False))
        _plan_file(path)
    else:
        pytest.fail(f"{block}: unknown marker {kind}: {what}")


def _parse(argv: list[str]) -> argparse.Namespace:
    """bench's own parser; an argparse error becomes the message instead of SystemExit."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code == 0:  # --help
            return argparse.Namespace(command=argv[0])
        pytest.fail(f"bench {shlex.join(argv)}: {err.getvalue().strip().splitlines()[-1]}")


@pytest.mark.parametrize("block,argv", SH_COMMANDS, ids=[f"{b} bench {shlex.join(a)}" for b, a in SH_COMMANDS])
def test_sh_commands_parse(block: Block, argv: list[str]) -> None:
    _parse(argv)


PLACEHOLDERS = {"MATRIX": "matrices/demo.yaml", "MATRIX_OR_RESULTS": "runs", "RESULTS": "runs", "DIR": "runs",
                "PATTERN": "teacher", "URI": "sqlite:///mlflow.db", "FILE": "verdicts.csv", "key=value": "epochs=1",
                "N": "2", "S": "30", "P": "local"}


def expand(synopsis: str) -> list[list[str]]:
    """A synopsis line (`bench run MATRIX [--only PATTERN] [--executor local|slurm] / bench cancel MATRIX`) as
    command lines with every option given: brackets opened, the first of `a|b`, placeholders filled."""
    parts = []
    for part in synopsis.replace("\\|", "|").split(" / "):
        first, *others = part.split(" | ")  # `bench check R --baseline F | --verdicts F`: either option
        parts.append(first)
        parts += [first.split(" --")[0] + " " + other for other in others]
    out = []
    for part in parts:
        words = shlex.split(part.replace("[", " ").replace("]", " "), comments=True)
        words = [PLACEHOLDERS.get(w, w).split("|")[0] for w in words if w not in {"...", "\u2026"}]
        assert words[0] == "bench", part
        out.append(words[1:])
    return out


def synopses() -> list[tuple[str, list[str]]]:
    """The synopsis blocks of the docs (marked `<!-- synopsis -->`) and the README's command table."""
    lines = [line for b in ALL if b.marker == ("synopsis", "") for line in b.text.splitlines() if line.strip()]
    lines += re.findall(r"^\| `(bench [^`]+)`(?:, `(bench [^`]+)`)? \|", README.read_text(encoding="utf-8"), re.M)
    flat = [s for item in lines for s in ([item] if isinstance(item, str) else item) if s]
    return [(s, argv) for s in flat for argv in expand(s)]


SYNOPSES = synopses()


@pytest.mark.parametrize("synopsis,argv", SYNOPSES, ids=[shlex.join(a) for _, a in SYNOPSES])
def test_synopses_name_real_options(synopsis: str, argv: list[str]) -> None:
    """Every option a synopsis or the README's command table shows is one bench's parser takes."""
    _parse(argv)


CHEAP_COMMANDS = sorted({tuple(a) for _, a in SH_COMMANDS if a[0] in CHEAP or "--help" in a})


@pytest.mark.parametrize("argv", CHEAP_COMMANDS, ids=shlex.join)
def test_cheap_commands_run(argv: tuple[str, ...]) -> None:
    done = bench_cli(*argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_readme_demo_figures_match_its_plan() -> None:
    """What the README says of the demo (42 cells) is what `bench plan` says."""
    assert "42 cells" in README.read_text(encoding="utf-8")
    assert re.search(r"^demo: 42 cells", _plan_file(ROOT / "matrices" / "demo.yaml"), re.M)


INLINE = re.compile(r"`(bench [^`]+)`")
PLACEHOLDER = re.compile(r"[\[\]<>…|]|\.\.\.|\b[A-Z]{2,}\b|\$")


def inline_commands() -> list[tuple[str, str]]:
    """`bench ...` spans in prose that are whole commands: a path among their words (`bench run` alone
    names the command) and no placeholder such as MATRIX, [..] or <..>."""
    out = []
    for path in [README, *PAGES]:
        for span in INLINE.findall(path.read_text(encoding="utf-8")):
            span = " ".join(span.split())
            if not PLACEHOLDER.search(span) and any("/" in word or word.endswith(".yaml") for word in span.split()[2:]):
                out.append((path.name, span))
    return sorted(set(out))


INLINE_COMMANDS = inline_commands()


@pytest.mark.parametrize("page,span", INLINE_COMMANDS, ids=[f"{p}: {s}" for p, s in INLINE_COMMANDS])
def test_inline_commands_parse(page: str, span: str) -> None:
    argv = [a for a in shlex.split(span)[1:] if a != "&&"]
    _parse(argv)


OTHER_TOOLS_OPTIONS = {
    "--backend-store-uri": "mlflow ui", "--benchmark-enable": "pytest-benchmark", "--durations": "pytest",
    "--strict": "mkdocs build", "--cpus-per-task": "sbatch", "--gpus": "sbatch", "--mem": "sbatch", "--time": "sbatch",
    "--dependency": "sbatch", "--kill-on-invalid-dep": "sbatch",
}


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= parser_options(sub)
    return options


def test_every_option_the_docs_name_exists() -> None:
    """`--workers N` in a sentence is an option of some bench command (or of the other tool named)."""
    known = parser_options(build_parser()) | set(OTHER_TOOLS_OPTIONS)
    unknown = {f"{path.name}: {option}" for path in [README, *PAGES]
               for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text(encoding="utf-8"))
               if option not in known}
    assert not unknown, sorted(unknown)


REPO_PATH = re.compile(r"(?<![\w/.-])((?:bench|tests|matrices|slurm|results|docs)/[\w./-]*\w)")
NOT_IN_THE_REPO = {
    "bench/methods/my_supervised.py": "the example method's file",
    "results/baselines/verdicts.csv": "what `bench check --verdicts ... --update` writes",
    "tests/paper_fixtures.write_imagenet_like": "a function of tests/paper_fixtures.py",
}


def test_files_the_docs_name_exist() -> None:
    """A module, test, matrix or profile the docs name is there: a moved module shows up here."""
    missing = set()
    for path in [README, *PAGES]:
        for name in REPO_PATH.findall(path.read_text(encoding="utf-8")):
            placeholder = re.search(r"\b[A-Z]+\b", name)
            if not placeholder and name not in NOT_IN_THE_REPO and not (ROOT / name).exists():
                missing.add(f"{path.name}: {name}")
    assert not missing, sorted(missing)


@pytest.mark.parametrize("block", of("python"), ids=str)
def test_python_blocks_run(block: Block) -> None:
    """Each Python block runs in a fresh interpreter (a method example registers its name there only)."""
    done = subprocess.run([sys.executable, "-c", block.text], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"{block}:\n{done.stderr}"


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def leaves(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [leaf for value in node.values() for leaf in leaves(value)]
        return [leaf for item in node for leaf in leaves(item)]  # type: ignore[union-attr]

    assert sorted(leaves(config["nav"])) == sorted(page.name for page in PAGES)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed: pip install -e '.[docs]'")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()
