"""The viewer as ONE self-contained HTML file (``samr1 view RUN_DIR --export FILE.html``), to share a run.

The page, its stylesheet and scripts are inlined; every run's curves, logged steps and groups go in a
``<script type="application/json" id="samr1-data">`` block, and each logged image once, as a ``data:`` URI.
Opened from disk, the page fetches nothing: ``viewer.js`` reads the block instead of asking a server.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from typing import Any

from samr1.view import static_file
from samr1.view.run import RunFolder, find_runs

__all__ = ["export_data", "export_html"]

_LINKS = {
    '<link rel="stylesheet" href="static/style.css">': ("style.css", "<style>\n{}\n</style>"),
    '<script src="static/common.js"></script>': ("common.js", "<script>\n{}\n</script>"),
}
_VIEWER_SCRIPT = '<script src="static/viewer.js"></script>'


def export_data(root: str) -> dict[str, Any]:
    """Everything the viewer shows for the runs under ``root``: ``{"root", "runs", "data": {run id: {"curves",
    "steps", "groups": {step: [...]}}}, "images": {key: data URI}}``."""
    root = os.path.abspath(root)
    runs = find_runs(root)
    data: dict[str, Any] = {}
    images: dict[str, str] = {}
    for rid in runs:
        folder = RunFolder(os.path.join(root, rid))
        steps = folder.steps()
        groups = {str(s["step"]): folder.groups(s["step"]) for s in steps["steps"]}
        for gs in groups.values():
            for g in gs:
                key = g.get("image")
                path = folder.image_path(key) if key not in images else None
                if path is not None:
                    with open(path, "rb") as f:
                        images[key] = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode("ascii")
        data[rid] = {"curves": folder.curves(), "steps": steps, "groups": groups}
    return {"root": root, "runs": runs, "data": data, "images": images}


def export_html(root: str, out: str) -> dict[str, int]:
    """Write the self-contained viewer of ``root`` to ``out`` (replaced atomically: a reader never sees half a
    file). Returns ``{"bytes", "runs", "steps", "images"}``."""
    page = static_file("viewer.html")[0].decode("utf-8")
    for tag, (name, wrap) in _LINKS.items():
        text = static_file(name)[0].decode("utf-8")
        if "</script" in text.lower() or "</style" in text.lower():
            raise ValueError(f"{name} contains a closing tag and cannot be inlined")
        if tag not in page:
            raise ValueError(f"viewer.html no longer links {name} as {tag!r}; update samr1.view.export")
        page = page.replace(tag, wrap.format(text))
    blob = export_data(root)
    # "<" escaped everywhere in the JSON: no string in the data can close the script element it sits in
    payload = json.dumps(blob, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    viewer = static_file("viewer.js")[0].decode("utf-8")
    if "</script" in viewer.lower():
        raise ValueError("viewer.js contains a closing tag and cannot be inlined")
    if _VIEWER_SCRIPT not in page:
        raise ValueError("viewer.html no longer links viewer.js; update samr1.view.export")
    page = page.replace(_VIEWER_SCRIPT, f'<script type="application/json" id="samr1-data">{payload}</script>\n'
                                        f"<script>\n{viewer}\n</script>")
    data = page.encode("utf-8")
    out = os.path.abspath(out)
    fd, tmp = tempfile.mkstemp(prefix=".samr1-export-", suffix=".html", dir=os.path.dirname(out))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; this file is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"bytes": len(data), "runs": len(blob["runs"]),
            "steps": sum(len(d["steps"]["steps"]) for d in blob["data"].values()), "images": len(blob["images"])}
