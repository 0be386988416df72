"""Where a result came from: the source revision recorded with model cards, benchmark rows and run logs."""

from __future__ import annotations

import os
import subprocess


def git_commit() -> str | None:
    """Short commit of the source tree samr1 was imported from (``-dirty`` when tracked files changed).

    Outside a git checkout (an installed wheel, or a copy of the tree without its ``.git`` folder, as sent
    to a GPU machine) it is ``$SAMR1_COMMIT`` when set, marked ``(given)`` because git could not check it;
    else None (also when git is missing).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    given = os.environ.get("SAMR1_COMMIT", "").strip()
    fallback = f"{given} (given)" if given else None
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return fallback
    if out.returncode != 0:
        return fallback
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
