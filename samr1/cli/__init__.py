"""The ``samr1`` command line: one module per subcommand under ``samr1.cli``.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func`` (called
with the parsed namespace; returns an exit code). Flags shared by the commands that load models are added
by :func:`add_model_flags`.

Errors are formatted once, here, in :func:`main`: a command raises (``InputError``, ``StoreError``,
``CheckpointError``, ``DeviceError``, an ``OSError`` while writing, or one of this module's
:class:`UsageError` / :class:`OutputError`) and the user sees one line ``samr1 <cmd>: error: ...`` on
stderr and an exit code from :data:`EXIT_CODES`; the traceback only with ``samr1 --debug <cmd> ...`` (or
``SAMR1_DEBUG=1``). Commands never print tracebacks or call ``sys.exit`` themselves.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import textwrap
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

# Subcommands in the order ``samr1 --help`` lists them; each is samr1/cli/<name>.py. A name whose module is
# not in this build (train, eval and serve arrive as their modules do) is left out of the parser and the help.
COMMANDS = ["demo", "train", "segment", "eval", "serve", "view", "embed", "export", "bench", "train_sam",
            "shapes_check", "trl_data"]

# Exit codes (documented in ``samr1 --help`` and docs/cli.md, which a test keeps equal). Scripts may rely on them.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in samr1 (please report it with the --debug traceback)
EXIT_USAGE = 2  # a flag is missing, unknown or has a bad value
EXIT_INPUT = 3  # an input or dataset is unreadable or malformed: manifest, image, mask, embedding store
EXIT_MODEL = 4  # a model cannot be used: unknown --sam, missing / corrupt / unsafe checkpoint, random SAM in eval
EXIT_DEVICE = 5  # the device or runtime is not usable: no GPU, missing GPU provider or optional package (extra)
EXIT_OUTPUT = 6  # an output cannot be written: --out, a cache or store folder (permissions, disk, path)
EXIT_BUSY = 75  # another process holds the embedding store (sysexits EX_TEMPFAIL: retry later or pass --wait)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: rerun with --debug and report the traceback)",
    EXIT_USAGE: "usage error: a flag is missing, unknown or has a bad value",
    EXIT_INPUT: "input error: a manifest, image, mask, token file or embedding store is unreadable or malformed",
    EXIT_MODEL: ("model error: unknown --sam kind; a missing, corrupt, unsafe or mismatched checkpoint or policy; "
                 "a random-weight SAM where a metric needs real weights"),
    EXIT_DEVICE: ("device error: the device or a package is not usable here (no GPU, no GPU provider, a missing "
                  "optional extra)"),
    EXIT_OUTPUT: "output error: --out, a cache or a store folder cannot be written",
    EXIT_BUSY: "busy: another process is writing the embedding store (retry, or pass --wait SECONDS)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:<4}{text}" for code, text in EXIT_CODES.items()]
    lines.append("  a command may add codes of its own (7 and up), listed in its --help.")
    lines.append("errors print one line 'samr1 COMMAND: error: ...' on stderr; 'samr1 --debug COMMAND ...' (or "
                 "SAMR1_DEBUG=1) adds the traceback.")
    return "\n".join(lines)


class CliError(SystemExit):
    """An error a command reports to the user: one line of text and an exit code :attr:`exit_code`.

    A ``SystemExit`` (as argparse's own usage errors are), so code that calls ``build_parser().parse_args`` or
    a command helper directly still sees the exception type it always did; :func:`main` catches it and prints
    ``samr1 <cmd>: error: <message>``.
    """

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog  # the parser that raised it (usage errors), else the running command


class UsageError(CliError):
    """A flag is missing, unknown or has a bad value (exit 2)."""

    exit_code = EXIT_USAGE


class OutputError(CliError):
    """An output path cannot be written (exit 6); the message names the flag and the path."""

    exit_code = EXIT_OUTPUT


# reStructuredText roles and literals in the docstrings that serve as --help descriptions:
# ":func:`samr1.io.rle_decode`" -> "samr1.io.rle_decode", "``--box``" -> "--box".
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def plain_text(text: str) -> str:
    """``text`` with reStructuredText markup (roles, double-backtick literals, ``::``) turned into plain text,
    as ``--help`` prints it."""
    text = _RST_ROLE.sub(r"\1", text)
    text = _RST_LITERAL.sub(r"\1", text)
    return text.replace(":: \n", ":\n").replace("::\n", ":\n")


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'segment'?)"`` when ``word`` is close to one of ``choices`` ('-' and '_' alike, any case),
    else ``""``."""
    import difflib

    def norm(c: str) -> str:
        return c.lower().replace("_", "-")

    by_norm = {norm(c): c for c in choices}
    close = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=0.6)
    return f" (did you mean {by_norm[close[0]]!r}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (one line, formatted by :func:`main`)
    instead of printing the usage block and exiting, that suggests the closest choice for a misspelt one,
    and whose help is plain text (the descriptions are docstrings); subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        bad = _INVALID_CHOICE.search(message)
        if bad:
            hint = did_you_mean(bad.group(1), re.findall(r"'([^']*)'", bad.group(2)))
            message = message[:bad.start()] + f"invalid choice: {bad.group(1)!r}{hint}; choose from {bad.group(2)}"
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)

    def format_help(self) -> str:
        return plain_text(super().format_help())

    def _get_formatter(self) -> argparse.HelpFormatter:
        fmt = super()._get_formatter()

        def split_lines(text: str, width: int) -> list[str]:
            # argparse's own wrapping, except that a URL or a flag is never broken at one of its hyphens
            return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

        fmt._split_lines = split_lines  # type: ignore[method-assign]
        return fmt


# ------------------------------------------------------------------------------------- shared helpers


# The SAM every command uses without --sam (samr1.sam.DEFAULT_SAM, repeated here so that building the parser
# does not import segment-anything; tests/test_cli_front.py checks that the two agree).
DEFAULT_SAM = "tiny-shapes"
SAM_WEIGHTS_URL = "https://github.com/facebookresearch/segment-anything#model-checkpoints"

# One --sam / --sam-checkpoint text for every command.
SAM_METAVAR = "KIND"
SAM_HELP = (f"SAM kind: vit_b, vit_l, vit_h (real SAM: give --sam-checkpoint), sam2_hiera_* / sam2.1_hiera_* "
            f"(t, s, b+, l; the [sam2] extra), tiny-shapes (shipped, trained on synthetic shapes only) or tiny "
            f"(random weights, for tests and benches) (default: {DEFAULT_SAM})")
SAM_CHECKPOINT_HELP = (f"weights of --sam (.pth for SAM, .pt for SAM 2); without it vit_* and sam2 kinds have "
                       f"random weights, and samr1 warns. Official checkpoints: {SAM_WEIGHTS_URL}")
COMPONENTS_METAVAR = "NAME[,NAME...]"
COMPONENTS_HELP = ("reward components, comma-separated (think,answer,iou; samr1.rewards.COMPONENTS adds "
                   "box_iou, box_l1, point_dist, ...)")


def add_sam_flags(p: argparse.ArgumentParser, *, checkpoint_help: str = SAM_CHECKPOINT_HELP) -> None:
    """``--sam KIND`` and ``--sam-checkpoint PATH``, with the same default, metavar and help everywhere."""
    p.add_argument("--sam", default=DEFAULT_SAM, metavar=SAM_METAVAR, help=SAM_HELP)
    p.add_argument("--sam-checkpoint", metavar="PATH", help=checkpoint_help)


def add_model_flags(p: argparse.ArgumentParser, *, policy: bool = False) -> None:
    """The flags every model-loading command shares (validated up front by :func:`main`)."""
    if policy:
        p.add_argument("--model", metavar="PATH", help="policy model directory (a Qwen2/2.5-VL checkpoint)")
    add_sam_flags(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def add_components_flag(p: argparse.ArgumentParser, *, default: str) -> None:
    """``--components``: one form for every command, one comma-separated value (``think,answer,iou``);
    :func:`split_components` turns it into names."""
    p.add_argument("--components", default=default, metavar=COMPONENTS_METAVAR,
                   help=f"{COMPONENTS_HELP} (default: {default})")


def split_components(values: str | Sequence[str]) -> tuple[str, ...]:
    """``"think,answer"`` (a flag) or ``["think", "answer"]`` (a YAML list) -> ``("think", "answer")``, blanks
    dropped.

    Raises:
        UsageError: no component named.
    """
    words = [values] if isinstance(values, str) else list(values)
    names = tuple(n.strip() for w in words for n in str(w).split(",") if n.strip())
    if not names:
        raise UsageError(f"--components names no component (got {' '.join(words)!r}); e.g. think,answer,iou")
    return names


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """How a policy is prompted and decoded: each defaults to what the saved policy records
    (``samr1_policy.json``, written by training), else to Seg-Zero's settings."""
    p.add_argument("--template", default=None,
                   help="prompt template name or a string with {query} (default: the saved policy's, else seg-zero)")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="generation budget (default: the saved policy's training budget, else 1024)")
    p.add_argument("--policy-size", type=int, default=None, metavar="S",
                   help="side of the square image the policy sees (default: the saved policy's, else 840)")


def generation_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of :meth:`samr1.pipeline.ReasoningSegmenter.from_pretrained` from
    :func:`add_generation_flags` (None: the saved policy's value), checked."""
    for flag, v in (("--max-new-tokens", args.max_new_tokens), ("--policy-size", args.policy_size)):
        if v is not None and v < 1:
            raise UsageError(f"{flag} must be >= 1, got {v}")
    size = (args.policy_size, args.policy_size) if args.policy_size is not None else None
    return {"template": args.template, "max_new_tokens": args.max_new_tokens, "model_size": size}


def resolve_device(name: str | None) -> str:
    """``--device`` value (checked: a CUDA device needs a visible GPU) or the best available device.

    Raises:
        samr1.sam.DeviceError: the device is not usable here; the message says what to use instead.
    """
    import torch

    from samr1.sam import check_device

    if name:
        check_device(name)
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_output_file(path: str, flag: str, *, force: bool = False) -> None:
    """Fail before any work when ``path`` (the value of ``flag``) cannot be written as a file.

    Raises:
        OutputError: ``path`` is a folder, exists and ``force`` is False, or its nearest existing parent is
            not a writable folder.
    """
    from samr1.outdirs import OutputDirError, check_run_files

    try:  # the project's one rule for outputs (samr1.outdirs)
        check_run_files([path], flag=flag, overwrite=force, overwrite_flag="--force")
    except OutputDirError as exc:
        raise OutputError(str(exc)) from None
    _check_parent_writable(os.path.dirname(os.path.abspath(path)), flag, path)


def check_output_dir(path: str, flag: str) -> None:
    """Fail before any work when folder ``path`` (the value of ``flag``) cannot be created or written.

    Raises:
        OutputError: ``path`` is a file, or it (or its nearest existing parent) is not a writable folder.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path} is a file, not a folder")
    _check_parent_writable(os.path.abspath(path), flag, path)


def _check_parent_writable(folder: str, flag: str, path: str) -> None:
    # Walk up to the nearest existing ancestor: that is the folder the first mkdir or open will write in.
    probe = folder
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputError(f"{flag} {path}: {probe} is a file, not a folder")
    # os.access also reports a read-only file system (EROFS), even for root; plain permission bits do not
    # stop root, so the write itself may still fail later, and main() reports that OSError as exit 6 too.
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {probe} is not writable (permissions or a read-only file "
                          "system); choose another path")


def os_error_text(exc: OSError) -> str:
    """``"Permission denied: /path"`` from an ``OSError`` (its reason and the file(s) it names)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{reason}: {' -> '.join(files)}" if files else reason


# ------------------------------------------------------------------------------------- optional extras

# Top-level module of a third-party package -> the pip extras of pyproject.toml that install it (the first
# one named in hints; tests/test_layout.py checks that this table and pyproject agree). The base install
# has none of these; a command that needs a missing one says which extra to install, in its one line.
OPTIONAL_MODULES: dict[str, tuple[str, ...]] = {
    "transformers": ("train",), "trl": ("train",), "accelerate": ("train",), "datasets": ("train",),
    "yaml": ("train",), "pycocotools": ("train",), "peft": ("train",), "tensorboard": ("train",),
    "fastapi": ("serve",), "uvicorn": ("serve",), "multipart": ("serve",),
    # the ONNX export serves both ONNX Runtime flavours (and TensorRT, which builds from it); the two
    # extras must never be installed together (onnxruntime and onnxruntime-gpu overwrite each other)
    "onnxruntime": ("onnx", "gpu"), "onnx": ("onnx", "gpu"), "onnxscript": ("onnx", "gpu"),
    "tensorrt": ("gpu",),
    "sam2": ("sam2",),
}


class MissingExtraError(CliError):
    """A command needs an optional extra that is not installed (exit 5); the message names the extra."""

    exit_code = EXIT_DEVICE


def install_hint(module: str) -> str | None:
    """``"pip install 'samr1[train]'"`` for the extra that provides ``module`` (a dotted name counts by its
    top-level package), or None when no extra does."""
    extras = OPTIONAL_MODULES.get(module.split(".")[0])
    if not extras:
        return None
    first, *others = extras
    return f"pip install 'samr1[{first}]'" + "".join(f" (or 'samr1[{e}]', not both)" for e in others)


def require_extra(extra: str) -> None:
    """Fail before any work when a package of ``extra`` is missing.

    Raises:
        MissingExtraError: one line naming the missing packages and ``pip install 'samr1[<extra>]'``.
        ValueError: ``extra`` is not one of :data:`OPTIONAL_MODULES`' extras (a bug in the caller).
    """
    import importlib.util

    modules = [m for m, extras in OPTIONAL_MODULES.items() if extra in extras]
    if not modules:
        raise ValueError(f"unknown extra {extra!r}; extras: {sorted({e for v in OPTIONAL_MODULES.values() for e in v})}")

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a finder that refuses it, or a half-imported module
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        raise MissingExtraError(f"this command needs the [{extra}] extra ({', '.join(missing)} not installed): "
                                f"pip install 'samr1[{extra}]'")


def _missing_package_text(exc: ImportError) -> str:
    """``str(exc)`` plus the extra to install when ``exc.name`` is a package of one (and it is not said yet)."""
    text = str(exc)
    hint = install_hint(exc.name) if exc.name else None
    if hint and "samr1[" not in text:
        return f"{text}; install it with {hint}"
    return text


# ------------------------------------------------------------------------------------- argv pre-pass

# A flag value that starts with '-' followed by a digit: "-50,-50,-10,-10", "-5", "-.5,3", "-1e3,2".
_NEGATIVE_VALUE = re.compile(r"^-\.?\d[\d.eE+\-,\s]*$")


def join_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--box -50,-50,-10,-10`` -> ``--box=-50,-50,-10,-10`` for flags of the chosen command that take one value.

    argparse reads a token that starts with '-' and is not a plain negative number ("-5") as an option, so a
    spaced coordinate list that starts negative would fail with "expected one argument". Joining the value to
    its flag with '=' is argparse's own unambiguous form. Only exact long flags of the subcommand that take
    exactly one value are joined, and nothing after a bare ``--``.
    """
    argv = list(argv)
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        return argv
    start = next((i for i, a in enumerate(argv) if a in sub.choices), None)
    if start is None:
        return argv
    actions = sub.choices[argv[start]]._option_string_actions
    out = argv[:start + 1]
    i = start + 1
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        action = actions.get(tok)
        if (action is not None and action.nargs in (None, 1) and tok.startswith("--") and i + 1 < len(argv)
                and _NEGATIVE_VALUE.match(argv[i + 1])):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


# ------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``samr1`` parser with every subcommand whose module is part of this build."""
    from samr1 import __version__

    parser = _Parser(prog="samr1", description="SAM-R1 reward engine, training and inference.",
                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"samr1 {__version__}")
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("SAMR1_DEBUG")),
                        help="on an error, print the traceback too (also: SAMR1_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable: dict[str, str] = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"samr1.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"samr1.cli.{name}":
                raise
            continue  # this subcommand is not part of this build yet: not in the parser, not in --help
        before = set(sub.choices)
        try:
            module.register(sub)
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == "samr1":
                raise  # samr1's own code is broken: a bug, not a missing optional package
            # A third-party package the command needs is not installed (an optional extra): the command is left
            # out of the listing, and main() says why when it is asked for by name.
            for added in set(sub.choices) - before:
                del sub.choices[added]
            sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest in sub.choices]
            unavailable[name.replace("_", "-")] = _missing_package_text(exc)
    parser.samr1_unavailable = unavailable  # type: ignore[attr-defined]
    if unavailable:
        parser.epilog += "\nunavailable here (a package they need is missing): " + "; ".join(
            f"{n} ({why})" for n, why in unavailable.items())
    for p in sub.choices.values():
        if "--debug" in p._option_string_actions:
            continue  # the command has its own --debug
        # `samr1 segment ... --debug` works as well as `samr1 --debug segment ...`; SUPPRESS keeps the
        # subcommand from resetting a --debug given before it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, print the traceback too")
    return parser


def listed_commands(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """The subcommand names ``samr1 --help`` lists, in order."""
    parser = parser or build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


# ------------------------------------------------------------------------------------- errors -> exit codes


def classify(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception a command raised (see :data:`EXIT_CODES`)."""
    from samr1.io import InputError
    from samr1.sam import DeviceError, ModelError

    try:
        from samr1.store import StoreError, StoreLockedError, StoreWriteError
    except ImportError:  # pragma: no cover - the store is part of every build
        StoreError = StoreLockedError = StoreWriteError = InputError  # noqa: N806
    try:
        from samr1.sam.prompts import PromptError
    except ImportError:  # pragma: no cover
        PromptError = InputError  # noqa: N806

    from samr1.outdirs import OutputDirError

    if isinstance(exc, CliError):
        return exc.exit_code, str(exc)
    if isinstance(exc, OutputDirError):
        return EXIT_OUTPUT, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, StoreLockedError):
        return EXIT_BUSY, str(exc)
    if isinstance(exc, StoreWriteError):
        return EXIT_OUTPUT, str(exc)
    if isinstance(exc, (InputError, StoreError, PromptError)):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, ImportError):  # before ModelError: a SAM 2 kind without its extra is both
        return EXIT_DEVICE, f"a package this needs is not installed: {_missing_package_text(exc)}"
    if isinstance(exc, ModelError):
        return EXIT_MODEL, str(exc)
    if isinstance(exc, DeviceError):
        return EXIT_DEVICE, str(exc)
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return EXIT_DEVICE, f"out of device memory ({_first_line(exc)}); use a smaller --batch or another --device"
    if isinstance(exc, OSError):
        # Inputs are read through samr1.io / samr1.data / samr1.sam, which wrap their OSErrors in InputError /
        # CheckpointError; a bare OSError reaching here comes from writing an output, a cache or a store.
        hint = {errno.EACCES: "check the folder's permissions", errno.EPERM: "check the folder's permissions",
                errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
                errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno or 0)
        return EXIT_OUTPUT, f"cannot write: {os_error_text(exc)}" + (f" ({hint})" if hint else "")
    if isinstance(exc, ValueError):
        # The library validates its arguments with ValueError messages that say what to change.
        return EXIT_USAGE, str(exc)
    return EXIT_INTERNAL, (f"internal error: {type(exc).__name__}: {exc} (rerun as 'samr1 --debug ...' for the "
                           "traceback and report it)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _one_line(message: str, cmd: str | None) -> str:
    """Collapse a message to one line and drop a redundant ``samr1 <cmd>:`` / ``samr1:`` prefix."""
    text = " ".join(message.split())
    for prefix in ([f"samr1 {cmd}: error:", f"samr1 {cmd}:"] if cmd else []) + ["samr1: error:", "samr1:"]:
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip()
            break
    return text or "failed (no message)"


def _report(prog: str, code: int, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _warning_printer(prog: str):
    """A ``warnings.showwarning`` that prints ``<prog>: warning: <message>`` on one line, each distinct message
    once per run (--debug keeps Python's default, with file, line and source)."""
    seen: set[str] = set()

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = _one_line(str(message), None)
        if text in seen:  # e.g. the random-SAM warning given up front, then again by load_sam
            return
        seen.add(text)
        print(f"{prog}: warning: {text}", file=sys.stderr if file is None else file)

    return show


# Commands that read the user's own images: without --sam they say which SAM they use (the default knows
# synthetic shapes only). demo, shapes-check, train-sam and bench work on synthetic scenes or time the work.
_NOTE_DEFAULT_SAM = ("segment", "eval", "serve", "embed", "export")


def sam_given(argv: Sequence[str]) -> bool:
    """Whether ``--sam`` appears in ``argv`` (before a bare ``--``)."""
    head = argv[:list(argv).index("--")] if "--" in argv else argv
    return any(a == "--sam" or a.startswith("--sam=") for a in head)


def _say_which_sam(args: argparse.Namespace, argv: Sequence[str], prog: str) -> None:
    """Before any work: warn when the SAM has random weights (unless the command chose that on purpose, as
    the benches do), and note the default SAM where a command reads the user's images."""
    import warnings as _warnings

    kind = getattr(args, "sam", None)
    if not isinstance(kind, str):
        return
    # here, not above: samr1.sam loads segment-anything and torch, which a command without --sam (samr1 view)
    # must not pay for
    from samr1.sam import RandomWeightsWarning, has_random_weights, random_weights_message

    if has_random_weights(kind, getattr(args, "sam_checkpoint", None)):
        # benches choose random weights on purpose; eval refuses them itself unless --allow-random-sam
        if not getattr(args, "random_sam_ok", False) and getattr(args, "allow_random_sam", None) is not False:
            _warnings.warn(RandomWeightsWarning(random_weights_message(kind)), stacklevel=2)
    elif args.command in _NOTE_DEFAULT_SAM and not sam_given(argv) and not getattr(args, "sam_checkpoint", None):
        print(f"{prog}: note: no --sam given: using {DEFAULT_SAM}, the small SAM samr1 ships, trained on "
              "synthetic shapes only; for real images pass --sam vit_h --sam-checkpoint PATH (weights: "
              f"{SAM_WEIGHTS_URL})", file=sys.stderr)


def _check_common_flags(args: argparse.Namespace) -> None:
    """Check the shared model/device flags before the command does any work (reading data, building models)."""
    # samr1.sam loads segment-anything and torch: imported only by a command that has these flags (samr1 view
    # has none and starts without torch)
    if isinstance(getattr(args, "sam", None), str):
        from samr1.sam import check_kind

        check_kind(args.sam)
    ckpt = getattr(args, "sam_checkpoint", None)
    if ckpt:
        from samr1.sam import CheckpointError

        if not os.path.exists(ckpt):
            raise CheckpointError(f"--sam-checkpoint {ckpt}: file not found (expected a "
                                  f"{getattr(args, 'sam', 'SAM')} state dict .pth)")
        if os.path.isdir(ckpt):
            raise CheckpointError(f"--sam-checkpoint {ckpt} is a folder; give the .pth file inside it")
    if getattr(args, "device", None):
        # Only an explicit --device is checked; None stays None (a command may give it a meaning, such as
        # one device per process under accelerate).
        resolve_device(args.device)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samr1`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code, never raises on user error.

    Every error becomes one line ``samr1 <cmd>: error: <message>`` on stderr and a code of :data:`EXIT_CODES`;
    with ``--debug`` the traceback is printed first.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before parsing succeeds there is no namespace yet: a --debug anywhere before a bare "--" counts.
    head = argv[:argv.index("--")] if "--" in argv else argv
    debug = bool(os.environ.get("SAMR1_DEBUG")) or "--debug" in head
    prog = "samr1"
    try:
        parser = build_parser()
        wanted = next((a for a in argv if not a.startswith("-")), None)
        if wanted in parser.samr1_unavailable:
            why = parser.samr1_unavailable[wanted]
            fix = "" if "samr1[" in why else "; install the extra it needs (see docs/install.md)"
            return _report(f"samr1 {wanted}", EXIT_DEVICE, f"this command is unavailable here: {why}{fix}")
        args = parser.parse_args(join_negative_values(parser, argv))
    except CliError as exc:
        return _report(exc.prog or prog, exc.exit_code, _one_line(str(exc), None))
    except SystemExit as exc:  # --help / --version print and exit 0
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a command module that fails to import is a bug, said in one line
        if debug:
            traceback.print_exc()
        code, message = classify(exc)
        return _report(prog, code, _one_line(message, None))
    debug = bool(args.debug)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    prog = f"samr1 {args.command}"
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_printer(prog)
        try:
            _check_common_flags(args)
            _say_which_sam(args, argv, prog)
            return int(args.func(args) or 0)
        except CliError as exc:
            if debug:
                traceback.print_exc()
            return _report(prog, exc.exit_code, _one_line(str(exc), args.command))
        except SystemExit as exc:
            # Commands should raise UsageError; a bare SystemExit("message") is still one line, as a usage error.
            if exc.code is None or isinstance(exc.code, int):
                return int(exc.code or 0)
            if debug:
                traceback.print_exc()
            return _report(prog, EXIT_USAGE, _one_line(str(exc.code), args.command))
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error is reported, none escapes
            if debug:
                traceback.print_exc()
            code, message = classify(exc)
            return _report(prog, code, _one_line(message, args.command))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
