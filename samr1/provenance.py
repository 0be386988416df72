"""Where a result came from: the source revision recorded with model cards, benchmark rows and run logs."""

from __future__ import annotations

import os
import subprocess


def git_commit() -> str | None:
    """Short commit of the source tree samr1 was imported from (``-dirty`` when tracked files changed).

    None when the package does not live in a git checkout (an installed wheel) or git is missing.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
