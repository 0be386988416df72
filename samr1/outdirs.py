"""The one rule for where a command writes a run: a folder (``train --output-dir``, ``embed --out``,
``bench --out``, ``train-sam --out``) or a set of files (``eval --out``: results JSON, samples JSONL, figure).

A run never writes over, or mixes its records with, what it did not create in that run:

- a folder that is missing, or empty (names in ``ignore``, e.g. a store's own lock file, do not count), is
  the new run's;
- a folder that holds anything else is refused, naming what it holds and the two ways on:
  ``resume=True`` (the command continues the run recorded there: ``train --resume``, ``embed`` on its own
  store, ``bench --append``), or ``overwrite=True`` (an explicit ``--overwrite``: the previous run's records,
  the names in ``records``, are removed before the new run writes, so a metrics file is never appended to
  across two runs; anything else in the folder is left alone);
- a run's output files that exist are refused unless ``overwrite=True``; then they are removed before the
  new run writes, so a run that stops half-way never leaves one run's results beside another's samples.

:func:`check_run_dir` / :func:`check_run_files` only look (call them before any slow work);
:func:`claim_run_dir` / :func:`claim_run_files` create the folder and remove the old records (call them once
the inputs are known good). Both raise :class:`OutputDirError` (the CLI's exit code 6).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable, Sequence

__all__ = ["OutputDirError", "check_run_dir", "claim_run_dir", "check_run_files", "claim_run_files",
           "run_dir_entries"]


class OutputDirError(Exception):
    """An output folder or file holds something this run did not create; the message names it and the flags."""


def run_dir_entries(path: str, ignore: Iterable[str] = ()) -> list[str]:
    """Sorted names in folder ``path`` that count as content (``ignore`` patterns left out); [] when missing.

    Raises:
        OutputDirError: ``path`` exists but is not a folder.
    """
    if not os.path.lexists(path):
        return []
    if not os.path.isdir(path):
        raise OutputDirError(f"{path} is a file, not a folder")
    pats = list(ignore)
    return sorted(n for n in os.listdir(path) if not any(fnmatch.fnmatch(n, p) for p in pats))


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_run_dir(path: str, *, flag: str, resume: bool = False, overwrite: bool = False,
                  ignore: Iterable[str] = (), resume_flag: str | None = "--resume",
                  overwrite_flag: str = "--overwrite") -> list[str]:
    """Refuse folder ``path`` (the value of ``flag``) when it holds anything and neither ``resume`` nor
    ``overwrite`` is given; returns what it holds (possibly []). Writes nothing.

    ``resume_flag`` / ``overwrite_flag`` are the command's names for the two ways on (None: the command has no
    resume), used in the message.

    Raises:
        OutputDirError: a file at ``path``, or a non-empty folder without ``resume`` / ``overwrite``.
    """
    if resume and overwrite:
        raise OutputDirError(f"{flag} {path}: {resume_flag} and {overwrite_flag} exclude each other (continue the "
                             "run there, or replace it)")
    names = run_dir_entries(path, ignore)
    if names and not (resume or overwrite):
        ways = [f"{resume_flag} to continue the run recorded there"] if resume_flag else []
        ways.append(f"{overwrite_flag} to replace its records")
        raise OutputDirError(f"{flag} {path} is not empty (it holds {_listing(names)}); a new run never writes over "
                             f"or mixes with files it did not create: choose a new folder, or pass "
                             f"{' or '.join(ways)}")
    return names


def claim_run_dir(path: str, *, records: Iterable[str] = (), overwrite: bool = False) -> list[str]:
    """Create folder ``path`` for a run; with ``overwrite``, first remove the previous run's records (entries
    matching the ``records`` glob patterns, files or folders). Returns the names removed.

    Call after :func:`check_run_dir` (which decided that writing here is allowed)."""
    removed: list[str] = []
    if overwrite and os.path.isdir(path):
        pats = list(records)
        for name in sorted(os.listdir(path)):
            if not any(fnmatch.fnmatch(name, p) for p in pats):
                continue
            full = os.path.join(path, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed.append(name)
    os.makedirs(path, exist_ok=True)
    return removed


def check_run_files(paths: Iterable[str], *, flag: str, overwrite: bool = False,
                    overwrite_flag: str = "--overwrite") -> list[str]:
    """Refuse the output files ``paths`` of one run (the value of ``flag`` and the files written beside it)
    when any exists and ``overwrite`` is not given; returns the existing ones. Writes nothing.

    Raises:
        OutputDirError: one of ``paths`` is a folder, or exists without ``overwrite``.
    """
    existing = []
    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            raise OutputDirError(f"{flag} {p} is a folder; give a file path")
        if os.path.lexists(p):
            existing.append(p)
    if existing and not overwrite:
        what = f"{existing[0]} exists" if len(existing) == 1 else f"{_listing(existing)} exist"
        raise OutputDirError(f"{flag} {what}; pass {overwrite_flag} to overwrite (a run never writes over files it "
                             "did not create), or choose another path")
    return existing


def claim_run_files(paths: Iterable[str]) -> list[str]:
    """Remove the existing files of ``paths`` (allowed by :func:`check_run_files` with ``overwrite``) and create
    their folders, so that the new run's files never sit beside the previous run's. Returns the removed ones."""
    removed = []
    for p in paths:
        if os.path.lexists(p) and not os.path.isdir(p):
            os.unlink(p)
            removed.append(p)
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    return removed
