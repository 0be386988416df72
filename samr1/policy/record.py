"""The record a saved policy carries: how it was prompted, in which frame it answers, its generation budget.

``samr1_policy.json`` is written beside the weights by the warm start and by ``samr1 train`` (in ``final/``
and in every checkpoint), and read by :meth:`samr1.pipeline.ReasoningSegmenter.from_pretrained`, so
``samr1 eval``, ``samr1 segment --model`` and ``samr1 serve --model`` prompt and read a policy the way it was
trained without flags (an explicit flag still wins). A folder without the file (any Qwen checkpoint) gets the
defaults: Seg-Zero's template, the 840 pixel frame, 1024 new tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECORD_FILE", "PolicyRecord", "read_record", "write_record"]

RECORD_FILE = "samr1_policy.json"


@dataclass
class PolicyRecord:
    """What a policy was trained with that decides how to prompt it and how to read its answers.

    Attributes:
        template: the prompt template text (``{query}`` placeholder), as resolved at training time.
        answer_frame: ``"pixels"`` (absolute pixels of the ``frame x frame`` image it sees, Qwen2.5-VL) or
            ``"norm1000"`` (0..1000 on each axis, Qwen2-VL / Qwen3-VL).
        frame: side of the square image the policy is shown (pixels).
        max_new_tokens: generation budget it was trained with (``max_completion_length``).
        answer_format: the answer's JSON layout (``"seg-zero"``: one ``bbox`` and ``points_1`` / ``points_2``).
        generation: decoding settings the rollouts used besides temperature (TRL samples with
            ``repetition_penalty`` 1.0 whatever the checkpoint's generation config says).
        reward: what the policy was rewarded with (components, SAM kind, preset); informational.
    """

    template: str = "seg-zero"
    answer_frame: str = "pixels"
    frame: int = 840
    max_new_tokens: int = 1024
    answer_format: str = "seg-zero"
    generation: dict[str, Any] = field(default_factory=lambda: {"repetition_penalty": 1.0})
    reward: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = RECORD_FILE) -> PolicyRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in values.items() if k in names}  # newer writers may add keys: keep reading
        rec = cls(**known)
        if rec.answer_frame not in ("pixels", "norm1000"):
            raise ValueError(f"{where}: answer_frame {rec.answer_frame!r} is not 'pixels' or 'norm1000'")
        if not isinstance(rec.frame, int) or rec.frame < 1 or not isinstance(rec.max_new_tokens, int) \
                or rec.max_new_tokens < 1:
            raise ValueError(f"{where}: frame and max_new_tokens must be positive integers")
        return rec


def read_record(folder: str | os.PathLike) -> PolicyRecord | None:
    """The record in ``folder``, or None when the folder has none.

    Raises:
        ValueError: the file exists but is not a valid record (named in the message).
    """
    path = os.path.join(os.fspath(folder), RECORD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON policy record ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return PolicyRecord.from_dict(values, where=path)


def write_record(folder: str | os.PathLike, record: PolicyRecord) -> str:
    """Write ``record`` to ``folder/samr1_policy.json`` (the folder must exist); return the path."""
    path = os.path.join(os.fspath(folder), RECORD_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record.to_dict(), f, indent=1)
    return path
