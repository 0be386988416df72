"""samr1's pages: the segmentation page of ``samr1 serve`` and the rollout viewer of ``samr1 view``.

Both are plain HTML with a small script each (``static/``: no build step, nothing fetched from another
host, so they work offline). Images are drawn in the browser from the JSON the servers return; masks travel
as COCO RLE and are decoded by ``static/common.js``.

- :func:`static_file` gives a page file's bytes and content type (the servers' ``/`` and ``/static/...``);
- :mod:`samr1.view.run` reads a run folder (``metrics.jsonl``, ``learn.jsonl``, ``rollouts/``);
- :mod:`samr1.view.server` serves the viewer (standard library HTTP server, loopback by default);
- :mod:`samr1.view.export` writes the viewer as one self-contained HTML file.
"""

from __future__ import annotations

import os

__all__ = ["STATIC_DIR", "STATIC_FILES", "static_file"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {
    "segment.html": "text/html; charset=utf-8",
    "viewer.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "segment.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
}
"""The files a server may send, by name, with their content types (nothing else under static/ is served)."""


def static_file(name: str) -> tuple[bytes, str] | None:
    """``(bytes, content type)`` of the page file ``name`` (a key of :data:`STATIC_FILES`), None for any other
    name: the servers answer 404 for it, and no path from a request ever reaches the file system."""
    ctype = STATIC_FILES.get(name)
    if ctype is None:
        return None
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return f.read(), ctype
