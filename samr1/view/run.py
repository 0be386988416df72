"""Reading a run folder for the viewer: learning curves, the logged steps and their groups.

A run folder is what ``samr1 train --output-dir`` writes: ``metrics.jsonl`` (one row per log, ``step`` plus
TRL's and samr1's numbers), and with ``--rollouts-every`` a ``rollouts/`` folder (see
:mod:`samr1.train.rollouts`). A folder of several runs (e.g. the output of ``samr1 bench learn``) works too:
every folder up to :data:`MAX_DEPTH` levels down (``samr1 bench learn``'s arms sit at
``<out>/seed<S>/<mode>/<arm>/``) that holds one of these is a run, and a ``learn.jsonl``
(records ``{arm, seed, step, heldout_giou, heldout_ciou, heldout_parse, train_reward_mean,
frac_reward_zero_std, seconds}``) at the top or in a run is read as held-out curves.

Everything is read when asked (a run that is still going shows its new steps on the next request); the
rollouts file is read incrementally, only the bytes appended since the last read. Malformed lines are
skipped and counted, never fatal: the viewer must open a run that was killed mid-write.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from typing import Any

from samr1.train.rollouts import IMAGES_DIR, ROLLOUTS_FILE, read_jsonl

__all__ = ["RunFolder", "find_runs", "MAX_DEPTH", "IMAGE_KEY"]

MAX_DEPTH = 3  # samr1 bench learn: <out>/seed<S>/<mode>/<arm>/
MAX_DIRS = 2000  # folders looked at while finding runs: a huge tree is cut, not walked for minutes
SKIP_DIRS = {"rollouts", "images", "final", "__pycache__", ".git"}
IMAGE_KEY = re.compile(r"^[0-9a-f]{16,64}$")
"""What an image key in a rollouts record looks like (a hex digest); anything else is never a file name."""


def _is_run(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, "metrics.jsonl"))
            or os.path.isfile(os.path.join(path, "rollouts", ROLLOUTS_FILE))
            or os.path.isfile(os.path.join(path, "learn.jsonl")))


def find_runs(root: str) -> list[str]:
    """Run folders under ``root`` (itself included), as paths relative to it (``"."`` for the root), sorted;
    at most :data:`MAX_DEPTH` levels down, checkpoints and rollout folders skipped."""
    root = os.path.abspath(root)
    found: list[str] = []
    todo = [(root, 0)]
    seen = 0
    while todo and seen < MAX_DIRS:
        path, depth = todo.pop()
        seen += 1
        if _is_run(path):
            found.append(os.path.relpath(path, root))
        if depth >= MAX_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if (e.is_dir(follow_symlinks=False) and e.name not in SKIP_DIRS and not e.name.startswith("checkpoint-")
                    and not e.name.startswith(".")):
                todo.append((e.path, depth + 1))
    return sorted(found, key=lambda r: (r != ".", r))


class _Tail:
    """Incremental reader of an append-only JSONL file: each :meth:`read` parses only the complete lines
    appended since the last one (a half-written last line waits for its newline)."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.records: list[dict[str, Any]] = []
        self.bad = 0
        self.ino: int | None = None

    def read(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.offset, self.records, self.bad, self.ino = 0, [], 0, None
            return self.records
        if st.st_ino != self.ino or st.st_size < self.offset:  # replaced or cut: read it again from the start
            self.offset, self.records, self.bad, self.ino = 0, [], 0, st.st_ino
        if st.st_size == self.offset:
            return self.records
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return self.records
        for line in data[:end].split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))
            except ValueError:
                self.bad += 1
                continue
            if isinstance(obj, dict):
                self.records.append(obj)
            else:
                self.bad += 1
        self.offset += end + 1
        return self.records


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numeric_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a numeric ``step``, keeping only finite numbers (what the charts draw; JSON has no NaN)."""
    return [{k: v for k, v in r.items() if _is_number(v)} for r in rows if _is_number(r.get("step"))]


def _finite_or_none(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


class RunFolder:
    """One run folder: its curves, its logged steps and the groups of a step. Thread-safe; cheap to ask again."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._rollouts = _Tail(os.path.join(self.path, "rollouts", ROLLOUTS_FILE))
        self._lock = threading.Lock()

    def _records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._rollouts.read())

    def curves(self) -> dict[str, Any]:
        """``{"metrics": rows of metrics.jsonl (numeric values, the last row per step and kind wins: a resumed run
        re-logs steps), "learn": learn.jsonl records, "bad_lines": n}``."""
        rows, bad = read_jsonl(os.path.join(self.path, "metrics.jsonl"))
        by_key: dict[tuple, dict[str, Any]] = {}
        for r in _numeric_rows(rows):
            # training logs and the final summary log can share a step: keep them apart by their key set
            by_key[(r["step"], "reward" in r, "train_runtime" in r)] = r
        metrics = sorted(by_key.values(), key=lambda r: r["step"])
        learn, bad2 = read_jsonl(os.path.join(self.path, "learn.jsonl"))
        return {"metrics": metrics, "learn": [_finite_or_none(r) for r in learn], "bad_lines": bad + bad2}

    def steps(self) -> dict[str, Any]:
        """The logged steps: ``{"steps": [{"step", "groups", "reward_mean", "zero_spread", "session",
        "earlier_sessions"}], "sessions": [...], "budget": the budget record or None, "bad_lines": n}``.

        A step logged by several sessions (a resumed run re-runs the steps after its checkpoint) shows the
        latest session's groups; the earlier ones are kept in the file and named in ``earlier_sessions``."""
        recs = self._records()
        sessions = [r for r in recs if r.get("type") == "session"]
        budget = next((r for r in recs if r.get("type") == "budget"), None)
        by_step: dict[int, dict[int, list[dict[str, Any]]]] = {}
        for r in recs:
            if r.get("type") == "group" and isinstance(r.get("step"), int):
                by_step.setdefault(r["step"], {}).setdefault(int(r.get("session", 0) or 0), []).append(r)
        out = []
        for step in sorted(by_step):
            per = by_step[step]
            last = max(per)
            groups = per[last]
            means = [g.get("reward_mean") for g in groups if isinstance(g.get("reward_mean"), (int, float))]
            out.append({"step": step, "groups": len(groups), "session": last,
                        "earlier_sessions": sorted(s for s in per if s != last),
                        "reward_mean": sum(means) / len(means) if means else None,
                        "zero_spread": sum(1 for g in groups if g.get("reward_std") == 0)})
        with self._lock:
            bad = self._rollouts.bad
        return {"steps": out, "sessions": sessions, "budget": budget, "bad_lines": bad}

    def groups(self, step: int) -> list[dict[str, Any]]:
        """The groups logged at ``step`` by the latest session that logged it (an empty list when none)."""
        recs = [r for r in self._records() if r.get("type") == "group" and r.get("step") == step]
        if not recs:
            return []
        last = max(int(r.get("session", 0) or 0) for r in recs)
        return [r for r in recs if int(r.get("session", 0) or 0) == last]

    def image_path(self, key: str) -> str | None:
        """The file of image ``key`` (a hex digest), None when the key is malformed or the file is absent."""
        if not isinstance(key, str) or not IMAGE_KEY.match(key):
            return None
        path = os.path.join(self.path, "rollouts", IMAGES_DIR, f"{key}.jpg")
        return path if os.path.isfile(path) else None
