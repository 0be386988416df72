"""Every example in README.md and docs/*.md works as written.

* Python blocks run, page by page, in order, in one namespace per page (as a reader pastes them into one
  session), in a scratch folder. A block that needs what a fresh clone lacks (real SAM weights, a GPU, a
  trained policy, a running server) is preceded by an HTML comment that names its stand-in, e.g.
  ``<!-- example: replace `load_sam("vit_h", checkpoint="sam_vit_h_4b8939.pth", device="cuda")` with
  `load_sam("tiny-shapes")` -->``. Directives, separated by ``;``: ``replace `OLD` with `NEW``` (a literal
  that must occur in the block), ``with policy`` (a tiny random Qwen2.5-VL folder in ``POLICY_DIR``),
  ``with server`` (a real ``samr1 serve`` app with the shipped SAM at ``SERVER_URL``), ``needs MODULE``
  (skipped, with the reason, where an optional package is missing).
* Shell blocks: every ``samr1`` command (also ``python -m samr1``, and after ``-m samr1.cli`` under
  accelerate or torchrun) is parsed by the real CLI parser, so a flag the command does not accept, a missing
  required flag or a bad choice fails; ``make TARGET`` must be a Makefile target, ``pip install
  'samr1[EXTRA]'`` an extra of pyproject.toml, ``python PATH.py`` an existing file.
* Links: every relative link of a Markdown file of the repository must name an existing file, and an
  ``#anchor`` into a Markdown file one of its headings.
* The exit-code table of docs/cli.md is ``samr1.cli.EXIT_CODES``, row for row.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKDOWN = [p for p in sorted(ROOT.rglob("*.md"))
            if not any(part.startswith(".") or part in ("build", "node_modules") for part in p.relative_to(ROOT).parts)]

FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*example:(.*?)-->\s*$")
REPLACE = re.compile(r"^replace\s+`(.+)`\s+with\s+`(.+)`$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: list[str]

    @property
    def where(self) -> str:
        name = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page`` with the directives of the ``<!-- example: ... -->`` comment on the
    line before each (outside code blocks only)."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].lstrip().startswith(fence):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(prev)
        directives = [d.strip() for d in marker.group(1).split(";") if d.strip()] if marker else []
        out.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:j]), directives))
        i = j + 1
    return out


def test_the_block_reader_sees_fences_markers_and_languages(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- example: replace `a` with `b`; needs x -->\n```python\nprint('a')\n```\n"
                    "```bash\nsamr1 demo\n```\n~~~\n```python\nnot a fence start\n~~~\n")
    found = blocks(page)
    assert [(b.lang, b.line, b.text) for b in found] == [("python", 4, "print('a')"), ("bash", 7, "samr1 demo"),
                                                          ("", 10, "```python\nnot a fence start")]
    assert found[0].directives == ["replace `a` with `b`", "needs x"] and found[1].directives == []


# ------------------------------------------------------------------------------------------ Python blocks


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory) -> str:
    pytest.importorskip("transformers", reason="a policy needs the [train] extra")
    from samr1.train.tiny_policy import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny-policy")


class _Server:
    """A real samr1 serve app (shipped tiny-shapes SAM, default reward) on a loopback port, started on demand."""

    def __init__(self) -> None:
        self.thread = None

    def url(self) -> str:
        if self.thread is None:
            pytest.importorskip("fastapi", reason="samr1 serve needs the [serve] extra")
            from samr1.engine import SamEngine
            from samr1.rewards import SamR1Reward
            from samr1.sam import load_sam
            from samr1.serve import ServerThread, create_app

            engine = SamEngine(load_sam("tiny-shapes"))
            self.thread = ServerThread(create_app(engine, reward=SamR1Reward(engine))).start()
        return self.thread.url

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()


def prepared(block: Block, ns: dict, policy: callable, server: _Server) -> str:
    """The block's source with its stand-ins applied (and ``POLICY_DIR`` / ``SERVER_URL`` set in ``ns``)."""
    src = block.text
    for d in block.directives:
        if m := REPLACE.match(d):
            old, new = m.groups()
            assert old in src, f"{block.where}: the marker replaces {old!r}, which the block does not contain"
            src = src.replace(old, new)
        elif d.startswith("needs "):
            for module in d.split()[1:]:
                if importlib.util.find_spec(module) is None:
                    pytest.skip(f"{block.where} needs {module}, which is not installed here")
        elif d == "with policy":
            ns["POLICY_DIR"] = policy()
        elif d == "with server":
            ns["SERVER_URL"] = server.url()
        else:
            raise AssertionError(f"{block.where}: unknown example directive {d!r}")
    return src


PYTHON_PAGES = [p for p in PAGES if any(b.lang in ("python", "py") for b in blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(ROOT)) for p in PYTHON_PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setenv("SAMR1_CACHE_DIR", str(tmp_path / "cache"))
    server = _Server()
    ns: dict = {"__name__": "__docs_example__"}
    try:
        for block in blocks(page):
            if block.lang not in ("python", "py"):
                continue
            src = prepared(block, ns, lambda: request.getfixturevalue("policy_dir"), server)
            try:
                exec(compile(src, block.where, "exec"), ns)  # noqa: S102 - the documentation's own examples
            except Exception as exc:  # noqa: BLE001 - say which block broke, with its own traceback below
                raise AssertionError(f"the example at {block.where} fails: {type(exc).__name__}: {exc}") from exc
    finally:
        server.stop()


def test_a_broken_example_fails(tmp_path, request):
    # the runner can fail: a block that raises, and a marker whose literal is not in its block
    page = tmp_path / "p.md"
    page.write_text("```python\nx = 1\n```\n\n```python\nundefined_name + x\n```\n")
    ns: dict = {}
    with pytest.raises(NameError):
        for b in blocks(page):
            exec(compile(prepared(b, ns, lambda: "", _Server()), "p.md", "exec"), ns)  # noqa: S102
    bad = Block(page, 1, "python", "print(1)", ["replace `load_sam(\"vit_h\")` with `x`"])
    with pytest.raises(AssertionError, match="does not contain"):
        prepared(bad, {}, lambda: "", _Server())


# ------------------------------------------------------------------------------------------ shell blocks


def commands(block: Block) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped, a ``$ `` prompt
    stripped, split at ``;``, ``&&``, ``||``, ``|`` and ``&``, without a leading shell keyword (``do``,
    ``then``, ...) or environment assignments (``OMP_NUM_THREADS=1 samr1 ...``)."""
    text = re.sub(r"\\\n", " ", block.text)
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        current: list[str] = []
        for tok in lex:
            if tok and set(tok) <= set(";&|"):
                if current:
                    out.append(current)
                current = []
            else:
                current.append(tok)
        if current:
            out.append(current)
    keywords = {"do", "then", "else", "time", "!"}
    stripped = []
    for cmd in out:
        while cmd and (cmd[0] in keywords or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", cmd[0])):
            cmd = cmd[1:]
        if cmd:
            stripped.append(cmd)
    return stripped


def samr1_argv(cmd: list[str]) -> list[str] | None:
    """The arguments of ``samr1`` in ``cmd`` (``samr1 ...``, ``python -m samr1[.cli] ...``, ``accelerate
    launch ... -m samr1.cli ...``, ``torchrun ... -m samr1.cli ...``), or None when it runs something else."""
    if cmd[0] == "samr1":
        return cmd[1:]
    for i in range(len(cmd) - 1):
        if cmd[i] == "-m" and cmd[i + 1] in ("samr1", "samr1.cli"):
            return cmd[i + 2:]
    return None


def check_command(cmd: list[str], where: str) -> None:
    """Fail (AssertionError) when ``cmd`` would not be accepted as written (see the module docstring)."""
    from samr1.cli import CliError, build_parser, join_negative_values

    argv = samr1_argv(cmd)
    if argv is not None:
        parser = build_parser()
        try:
            parser.parse_args(join_negative_values(parser, argv))
        except CliError as exc:
            raise AssertionError(f"{where}: `{shlex.join(cmd)}` is refused by the CLI: {exc}") from None
        except SystemExit as exc:  # --help / --version
            assert exc.code in (0, None), f"{where}: `{shlex.join(cmd)}` exits {exc.code}"
        return
    if cmd[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        for t in (a for a in cmd[1:] if "=" not in a and not a.startswith("-")):
            assert t in targets, f"{where}: `make {t}`: no such target in the Makefile ({sorted(targets)})"
    elif cmd[:2] == ["pip", "install"] or cmd[:4] == ["python", "-m", "pip", "install"]:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            from pip._vendor import tomli as tomllib
        extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
        for arg in cmd:
            if m := re.fullmatch(r"(?:samr1|\.|-e\s*\.)\[([\w,-]+)\]", arg):
                missing = set(m.group(1).split(",")) - extras
                assert not missing, f"{where}: `{arg}`: no extra {sorted(missing)} in pyproject.toml"
    elif cmd[0] in ("python", "python3") and len(cmd) > 1 and cmd[1].endswith(".py"):
        assert (ROOT / cmd[1]).is_file(), f"{where}: `{shlex.join(cmd)}`: {cmd[1]} does not exist"


SHELL_BLOCKS = [b for p in PAGES for b in blocks(p) if b.lang in ("bash", "sh", "shell", "console")]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.where for b in SHELL_BLOCKS])
def test_shell_commands_are_accepted(block, monkeypatch):
    monkeypatch.delenv("SAMR1_DEBUG", raising=False)
    cmds = commands(block)
    assert cmds, f"{block.where}: an empty shell block"
    for cmd in cmds:
        check_command(cmd, block.where)


def test_the_command_checker_can_fail():
    where = "test"
    for bad in (["samr1", "segment", "--image", "a.png", "--out", "m.png", "--bogus"],
                ["samr1", "segment", "--out", "m.png"],  # --image is required
                ["samr1", "sgment"], ["samr1", "eval", "--out", "r.json", "--data-format", "nope"],
                ["make", "nonexistent-target"], ["pip", "install", "samr1[nope]"],
                ["python", "bench/no_such_bench.py"]):
        with pytest.raises(AssertionError):
            check_command(bad, where)
    check_command(["samr1", "segment", "--image", "a.png", "--box", "-5,-5,3,3", "--out", "m.png"], where)
    block = Block(ROOT / "x.md", 1, "bash", "samr1 demo --out d \\\n  --scenes 2  # comment\n"
                                            "for i in 0 1; do samr1 bench parse --smoke & done; wait", [])
    assert commands(block)[0] == ["samr1", "demo", "--out", "d", "--scenes", "2"]
    assert ["samr1", "bench", "parse", "--smoke"] in commands(block)


# ------------------------------------------------------------------------------------------ links


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    lines, inside = [], False
    for line in md.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and line.startswith("#"):
            lines.append(line.lstrip("#"))
    return {slug(h) for h in lines}


def links(md: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of the links and images of ``md`` outside code blocks and inline code."""
    out, inside = [], False
    for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            out += [(n, m.group(1)) for m in LINK.finditer(re.sub(r"`[^`]*`", "", line))]
    return out


def broken_links(md: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``md`` that name a missing file, or a heading its Markdown file does not have."""
    broken = []
    for n, target in links(md):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        where = f"{md.relative_to(root)}:{n}: {target}"
        if not dest.exists():
            broken.append(where)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("md", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_links_to_repository_files_resolve(md):
    broken = broken_links(md)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_can_fail(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [anchor](docs/a.md#title-here) [web](https://example.org/x)\n"
                    "[gone](docs/missing.md) [bad anchor](docs/a.md#nope) `[code](not/a/link.md)`\n"
                    "![img](docs/images/none.png)\n```\n[in code](x.md)\n```\n")
    broken = broken_links(page, root=tmp_path)
    assert [b.split(": ", 1)[1] for b in broken] == ["docs/missing.md", "docs/a.md#nope (no heading #nope in a.md)",
                                                     "docs/images/none.png"]


# ------------------------------------------------------------------------------------------ the exit-code table


def test_the_exit_code_table_is_the_clis():
    from samr1.cli import EXIT_CODES

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.M)}
    assert rows == EXIT_CODES


def test_no_page_mentions_a_development_artifact():
    # the pages speak of the project alone: no issue numbers, no paths outside the repository
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\bissue[- ]?#?\d+|\.\./shared|/work/", text, re.I), page.name
    assert os.path.isfile(ROOT / "LICENSE") and "Apache License" in (ROOT / "LICENSE").read_text()
