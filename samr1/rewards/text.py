"""Format checks shared by every preset: the text of a TRL completion, samr1's think/answer format rewards.

Completions arrive as strings or in TRL's conversational form (a list of message dicts);
:func:`completion_text` turns both into the text the policy wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from samr1.answer import DEFAULT_MODEL_SIZE, parse_answer

__all__ = ["completion_text", "think_format_ok", "think_format_reward", "answer_format_reward", "search_json"]


def completion_text(completion: Any) -> str | None:
    """The text of one TRL completion, or None when it has no recognisable form.

    A ``str`` is returned as is. TRL's conversational form is a list of message dicts: the content of the
    LAST message whose role is "assistant" is used; content may be a ``str`` or a list of parts
    (``{"type": "text", "text": ...}``, text parts concatenated, other parts ignored). A single message
    dict is accepted too.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return None
    for msg in reversed(completion):
        if isinstance(msg, dict) and msg.get("role", "assistant") == "assistant":
            content = msg.get("content")
            if content is None:
                return ""
            if isinstance(content, str):
                return content
            if isinstance(content, (list, tuple)):
                parts = []
                for part in content:
                    if isinstance(part, str):
                        parts.append(part)
                    elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                        parts.append(part["text"])
                return "".join(parts)
            return None
    return None


def think_format_ok(text: Any) -> bool:
    """True when ``text`` is exactly ``<think>...</think>`` then ``<answer>...</answer>``.

    Precisely: after stripping surrounding whitespace the text starts with ``<think>`` and ends with
    ``</answer>``; each of the four tags occurs exactly once (a second answer block is not a format, and
    would let a policy hedge); only whitespace lies between ``</think>`` and ``<answer>``. The think and
    answer contents are free (may be empty). Linear time: ``str.count`` / ``str.find``.
    """
    if not isinstance(text, str):
        return False
    s = text.strip()
    if not (s.startswith("<think>") and s.endswith("</answer>")):
        return False
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if s.count(tag) != 1:
            return False
    close_think = s.find("</think>") + len("</think>")
    open_answer = s.find("<answer>")
    return open_answer >= close_think and not s[close_think:open_answer].strip()


def think_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 per completion that passes :func:`think_format_ok`, else 0.0."""
    return [1.0 if think_format_ok(completion_text(c)) else 0.0 for c in completions]


def answer_format_reward(completions: Sequence[Any], model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
                         require_points: bool = True, multi_object: str = "union", **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 per completion whose answer parses, else 0.0.

    "Parses" is exactly ``parse_answer(text, model_size=model_size, require_points=require_points,
    multi_object=multi_object).ok``
    (see :func:`samr1.answer.parse_answer`): the last ``<answer>`` block holds JSON (or a Python-style
    literal) with a 4-number box (``bbox``/``bbox_2d``) of positive area inside the model frame and, by
    default, 1 to 64 points of 2 numbers each. No image size is needed: ``ok`` never depends on it.
    """
    out = []
    for c in completions:
        text = completion_text(c)
        out.append(1.0 if text is not None and parse_answer(text, None, model_size, require_points=require_points,
                                                            multi_object=multi_object).ok else 0.0)
    return out



def search_json(pattern: re.Pattern[str], text: str, group: int = 0) -> Any:
    """The first match of ``pattern`` in ``text`` (its ``group``), decoded with ``json.loads``, the way the
    peers' rewards read an answer; raises ``LookupError`` when nothing matches (and json's errors)."""
    found = pattern.search(text)
    if found is None:
        raise LookupError(f"no match of {pattern.pattern!r}")
    return json.loads(found.group(group))
