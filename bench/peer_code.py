"""Load the peers' real reward and data-preparation code from a checkout the user gives (never vendored).

``load_peer(path)`` takes a checkout of the Seg-Zero repository (which also holds VisionReasoner's training
code) and returns its functions, imported from the checkout's own files:

* ``verl/utils/reward_score/seg_restrict.py``: Seg-Zero's training reward (``seg_*`` functions);
* ``verl/utils/reward_score/vision_reasoner.py``: VisionReasoner's (``vision_reasoner_*``);
* ``prepare_dataset/training_data_prepare_toturial.ipynb``: the cell defining ``get_two_representative_points``
  (the reference points of a mask), executed on its own;
* ``prepare_dataset/gen_training_dataset.py``: ``scale_box_coordinates`` / ``scale_point_coordinates`` (the
  ``int(v * 840 / W + 0.5)`` scaling), taken from the file's syntax tree without running its top-level
  imports (datasets, cv2, the Hub client);
* ``evaluation_scripts/evaluation.py`` / ``evaluation_visionreasoner.py``: the prompt each gives the model
  (``QUESTION_TEMPLATE`` and the ``Answer`` example it is formatted with), read from the syntax tree.

The reward files are imported as modules (they need only numpy and scipy). Whatever is missing is listed in
``PeerCode.missing``; the reward modules are required.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["PeerCode", "load_peer", "WHAT_TO_PASS"]

SEG_RESTRICT = os.path.join("verl", "utils", "reward_score", "seg_restrict.py")
VISION_REASONER = os.path.join("verl", "utils", "reward_score", "vision_reasoner.py")
NOTEBOOK = os.path.join("prepare_dataset", "training_data_prepare_toturial.ipynb")
GEN_DATASET = os.path.join("prepare_dataset", "gen_training_dataset.py")
EVAL_SCRIPTS = {"seg-zero": os.path.join("evaluation_scripts", "evaluation.py"),
                "vision-reasoner": os.path.join("evaluation_scripts", "evaluation_visionreasoner.py")}

WHAT_TO_PASS = ("pass --peer-repo PATH: a git checkout of the Seg-Zero repository (dvlab-research/Seg-Zero; it "
                "also holds VisionReasoner's training code). The bench imports its "
                f"{SEG_RESTRICT} and {VISION_REASONER} and, when present, the data preparation in "
                f"{NOTEBOOK} and {GEN_DATASET}; nothing of it is copied into samr1")


@dataclass
class PeerCode:
    """The peer's functions, each loaded from the checkout at ``root``."""

    root: str
    seg_restrict: ModuleType
    vision_reasoner: ModuleType
    representative_points: Callable[[Any], Any] | None = None
    scale_box: Callable[..., list[int]] | None = None
    scale_point: Callable[..., list[int]] | None = None
    templates: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    commit: str | None = None


def _import_file(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook_function(path: str, name: str) -> Callable[..., Any]:
    """Run the notebook cell that defines ``name`` (with numpy as np and scipy's ndimage, which it uses)."""
    import numpy as np
    from scipy import ndimage

    with open(path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    for cell in cells:
        src = "".join(cell.get("source", []))
        if cell.get("cell_type") == "code" and f"def {name}(" in src:
            namespace: dict[str, Any] = {"np": np, "ndimage": ndimage}
            exec(compile(src, f"{path} (cell defining {name})", "exec"), namespace)  # noqa: S102 - the peer's code
            return namespace[name]
    raise LookupError(f"{path}: no cell defines {name}()")


def _source_functions(path: str, names: tuple[str, ...]) -> dict[str, Callable[..., Any]]:
    """The functions ``names`` of a Python file, compiled from its syntax tree alone (its imports not run)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), namespace)  # noqa: S102
    missing = [n for n in names if n not in namespace]
    if missing:
        raise LookupError(f"{path}: no function {missing}")
    return {n: namespace[n] for n in names}


def _prompt_template(path: str) -> tuple[str, str]:
    """(``QUESTION_TEMPLATE``, the ``Answer=`` example it is formatted with) of an evaluation script."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    template = answer = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "QUESTION_TEMPLATE" for t in node.targets):
            template = ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "format":
            for kw in node.keywords:
                if kw.arg == "Answer" and isinstance(kw.value, ast.Constant):
                    answer = kw.value.value
    if template is None or answer is None:
        raise LookupError(f"{path}: no QUESTION_TEMPLATE / Answer example")
    return template, answer


def _head_commit(root: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_peer(root: str) -> PeerCode:
    """Import the peer's code from the checkout at ``root``.

    Raises:
        FileNotFoundError: the reward files are not there (the message says what to pass).
    """
    root = os.path.abspath(os.path.expanduser(root))
    for rel in (SEG_RESTRICT, VISION_REASONER):
        if not os.path.isfile(os.path.join(root, rel)):
            raise FileNotFoundError(f"--peer-repo {root}: {rel} not found; {WHAT_TO_PASS}")
    peer = PeerCode(root=root, seg_restrict=_import_file(os.path.join(root, SEG_RESTRICT), "peer_seg_restrict"),
                    vision_reasoner=_import_file(os.path.join(root, VISION_REASONER), "peer_vision_reasoner"),
                    commit=_head_commit(root))
    try:
        peer.representative_points = _notebook_function(os.path.join(root, NOTEBOOK),
                                                        "get_two_representative_points")
    except (OSError, LookupError, ValueError, SyntaxError) as exc:
        peer.missing.append(f"{NOTEBOOK}: {exc}")
    try:
        fns = _source_functions(os.path.join(root, GEN_DATASET), ("scale_box_coordinates", "scale_point_coordinates"))
        peer.scale_box, peer.scale_point = fns["scale_box_coordinates"], fns["scale_point_coordinates"]
    except (OSError, LookupError, SyntaxError) as exc:
        peer.missing.append(f"{GEN_DATASET}: {exc}")
    for name, rel in EVAL_SCRIPTS.items():
        try:
            peer.templates[name] = _prompt_template(os.path.join(root, rel))
        except (OSError, LookupError, ValueError, SyntaxError) as exc:
            peer.missing.append(f"{rel}: {exc}")
    return peer
