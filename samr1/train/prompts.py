"""Prompt templates the policy is trained with, as TRL conversational messages.

``seg-zero`` is Seg-Zero's template verbatim (its training and evaluation code; SAM-R1 builds on it): one
box and the two inscribed-circle points, in the policy's 840 x 840 frame. ``vision-reasoner`` is
VisionReasoner's multi-object variant (a list of ``bbox_2d`` / ``point_2d`` objects, every one scored by
the ``visionreasoner`` reward preset). A custom template is any string containing ``{query}``.

The query is normalised as the peers do before it fills the template: ``query.lower().strip(".")``
(:func:`normalize_query`), so a filled named template is byte-identical to the text the peers' evaluation
code gives the model (``bench/bench_fidelity.py`` checks it against their files).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TEMPLATES", "normalize_query", "resolve_prompt", "format_prompt", "conversation"]

TEMPLATES: dict[str, str] = {
    "seg-zero": (
        "Please find '{query}' with bbox and points."
        "Compare the difference between objects and find the most closely matched one."
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
        "Output the one bbox and points of two largest inscribed circles inside the interested object in JSON "
        "format."
        "i.e., <think> thinking process here </think>"
        "<answer>{{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}}</answer>"
    ),
    "vision-reasoner": (
        "Please find \"{query}\" with bboxs and points."
        "Compare the difference between object(s) and find the most closely matched object(s)."
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
        "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
        "i.e., <think> thinking process here </think>"
        "<answer>[{{\"bbox_2d\": [10,100,200,210], \"point_2d\": [30,110]}}, "
        "{{\"bbox_2d\": [225,296,706,786], \"point_2d\": [302,410]}}]</answer>"
    ),
}
"""Named templates; ``{query}`` is replaced, doubled braces are literal braces (``str.format``)."""


def resolve_prompt(name_or_template: str) -> str:
    """The template string of a name in :data:`TEMPLATES`, or a custom template checked to hold ``{query}``."""
    if not isinstance(name_or_template, str) or not name_or_template:
        raise ValueError(f"a prompt template must be a name ({sorted(TEMPLATES)}) or a string with {{query}}")
    if name_or_template in TEMPLATES:
        return TEMPLATES[name_or_template]
    if "{query}" not in name_or_template:
        raise ValueError(f"unknown template name and no {{query}} placeholder; use one of {sorted(TEMPLATES)} or a "
                         "string containing {query} (write literal braces as {{ and }})")
    try:
        name_or_template.format(query="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"the template does not format with only {{query}} ({exc!r}); write literal braces as "
                         "{{ and }}") from None
    return name_or_template


def normalize_query(query: str) -> str:
    """The peers' query normalisation: lower case, leading and trailing full stops removed (nothing else)."""
    return query.lower().strip(".")


def format_prompt(template: str, query: str) -> str:
    """The user text for one query (``template`` as accepted by :func:`resolve_prompt`; the query goes in
    through :func:`normalize_query`)."""
    return resolve_prompt(template).format(query=normalize_query(query))


def conversation(template: str, query: str) -> list[dict[str, Any]]:
    """One TRL conversational prompt: a single user turn holding the text.

    TRL's VLM path puts the row's ``image`` in front of the text (``prepare_multimodal_messages``).
    """
    return [{"role": "user", "content": format_prompt(template, query)}]
