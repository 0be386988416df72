"""Training data for ``samr1 train``: loaders, up-front row checks, and the dataset TRL iterates.

Every loader returns :class:`TrainRow` objects (image and mask at the ORIGINAL resolution, a query, and a
``position`` that names the file and row for error messages):

- :func:`rows_from_manifest`: samr1's JSONL manifest (:func:`samr1.data.read_manifest`);
- :func:`rows_from_hf`: a Hugging Face ``datasets`` folder (``save_to_disk``) or parquet file(s) with
  Seg-Zero's / VisionReasoner's evaluation columns ``image``, ``text``, ``mask`` (nested lists of bool,
  H x W), ``img_height``, ``img_width``;
- :func:`rows_from_refcocog`: COCO ``instances.json`` + ``refs(umd).p``; one row per referring sentence,
  masks from the annotation's polygons or RLE (pycocotools);
- :func:`rows_from_reasonseg`: LISA's ReasonSeg split folder (``<name>.json`` labelme files beside
  ``<name>.jpg``); one row per query; "ignore" polygons are kept as 255 in the mask (LISA's convention),
  so the target is ``mask == 1`` and the ignore region ``mask == 255``.

:func:`check_rows` loads every row once before training and reports bad ones (missing file, unreadable
image or mask, mask size differs from the image) with their positions; :class:`PolicyDataset` turns rows
into TRL conversational rows with TWO images: ``image`` (the policy's ``S x S`` copy, S = 840 by default)
and ``sam_image`` (the original, which the reward reads with ``SamR1Reward(image_key="sam_image")``), plus
``mask`` (H x W bool, original size) and ``row_id``.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import pickle
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from samr1.io import InputError, load_image, load_mask

__all__ = ["TrainRow", "BadRow", "rows_from_manifest", "rows_from_hf", "rows_from_refcocog", "rows_from_reasonseg",
           "reasonseg_mask", "detect_format", "load_rows", "select_rows", "check_rows", "PolicyDataset",
           "parquet_split_files", "resolve_split"]


@dataclass
class TrainRow:
    """One training sample before checks.

    Attributes:
        image: path, PIL image or ``H x W x 3`` uint8 array (original resolution).
        query: the referring text.
        mask: path, COCO RLE dict, array (``H x W``, nonzero = object; 255 = ignore for ReasonSeg) or nested
            lists (Seg-Zero's parquet), at the image's ``H x W``.
        position: where the row comes from, e.g. ``"train.jsonl:12"`` or ``"data.parquet row 7"``.
        size: ``(H, W)`` the source declares (``img_height``/``img_width``), checked when given.
        ignore_value: mask value marking ignore regions (255 for ReasonSeg), or None.
        masks: the instances of a multi-object target (a manifest's ``"masks"``, a dataset row whose mask is a
            list of masks), each in any form ``mask`` takes; ``[]`` is an empty target. ``mask`` is then None
            (their union is the target). None for a one-mask row.
    """

    image: Any
    query: str
    mask: Any
    position: str
    size: tuple[int, int] | None = None
    ignore_value: int | None = None
    masks: list[Any] | None = None


@dataclass
class BadRow:
    """A row that failed :func:`check_rows`: its index in the loaded order, position and the reason."""

    index: int
    position: str
    reason: str

    def __str__(self) -> str:
        return f"{self.position}: {self.reason}"


# ------------------------------------------------------------------------------------------- loaders
def rows_from_manifest(path: str) -> list[TrainRow]:
    """Rows of a JSONL manifest. Files are checked later (:func:`check_rows`), so a missing file is a bad row
    with its line, not a loader failure; a malformed line still raises :class:`InputError` here."""
    from samr1.data import read_manifest

    return [TrainRow(s.image, s.query, s.mask, s.source, masks=s.masks) for s in read_manifest(path, check_files=False)]


def resolve_split(wanted: str, available: Sequence[str]) -> str | None:
    """The split of ``available`` that ``wanted`` names (None when none does): itself, or the Hugging Face split it is a keyword of
    ("val" and "dev" are "validation", "eval" is "test", ...; ``datasets.data_files.SPLIT_KEYWORDS``), either way
    round. None when none matches."""
    if wanted in available:
        return wanted
    from datasets.data_files import SPLIT_KEYWORDS

    for split, words in SPLIT_KEYWORDS.items():
        names = {str(split), *words}
        if wanted in names:
            hits = [a for a in available if a in names]
            if len(hits) == 1:
                return hits[0]
    return None


def _file_split(path: str) -> str | None:
    """The split a parquet file's name carries, by Hugging Face's naming: ``data/<split>-00000-of-00003.parquet``
    (any split name), or a split keyword between separators (``val.parquet``, ``my_test_1.parquet``)."""
    import re

    from datasets.data_files import SPLIT_KEYWORDS

    name = os.path.basename(path)
    sharded = re.match(r"^(\w+?)-\d{5}-of-\d{5}", name)
    if sharded and os.path.basename(os.path.dirname(os.path.abspath(path))) == "data":
        return sharded.group(1)
    tokens = set(re.split(r"[-._ 0-9]+", name.rsplit(".", 1)[0]))
    return next((str(split) for split, words in SPLIT_KEYWORDS.items() if tokens & set(words)), None)


def parquet_split_files(path: str, split: str) -> list[str]:
    """The parquet files of split ``split`` in ``path`` (a folder or one file), by Hugging Face's own rules.

    A folder is read as ``datasets.load_dataset(path)`` reads it (``datasets.data_files.get_data_patterns``):
    the hub's ``data/<split>-00000-of-00001.parquet``, ``<split>/*.parquet``, ``<split>.parquet``,
    ``train_part1.parquet`` ...; a folder whose names carry no split is one split, "train". A single file is
    the data itself, unless its name carries another split's name.

    Raises:
        InputError: no parquet files, or ``split`` is not one of the splits there (the message lists them).
    """
    from datasets.data_files import DataFilesDict, get_data_patterns

    if not os.path.isdir(path):
        named = _file_split(path)
        if named is not None and resolve_split(split, [named]) is None:
            raise InputError(f"{path}: the file name says split {named!r}, not {split!r}; pass --split {named} (or "
                             f"give the file of split {split!r})")
        return [path]
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(path), base_path=path, allowed_extensions=[".parquet"])
    except FileNotFoundError:
        files = {}
    files = {str(k): sorted(v) for k, v in files.items() if v}
    if not files:
        raise InputError(f"{path}: no parquet files and no save_to_disk dataset (dataset_info.json) found")
    name = resolve_split(split, list(files))
    if name is None:
        why = " (no file or folder name there names a split, so Hugging Face reads them all as 'train')" \
            if list(files) == ["train"] else ""
        raise InputError(f"{path}: the parquet files hold splits {sorted(files)}, not {split!r}{why}; choose one with "
                         "--split")
    return files[name]


def _hf_dataset(path: str, split: str):
    import datasets

    if os.path.isdir(path) and (os.path.exists(os.path.join(path, "dataset_info.json"))
                                or os.path.exists(os.path.join(path, "dataset_dict.json"))):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            name = resolve_split(split, list(ds))
            if name is None:
                raise InputError(f"{path}: the dataset has splits {sorted(ds)}, not {split!r}; choose one with --split")
            ds = ds[name]
        return ds
    return datasets.Dataset.from_parquet(parquet_split_files(path, split))


def rows_from_hf(path: str, split: str = "train") -> list[TrainRow]:
    """Rows of split ``split`` of a Hugging Face dataset saved with ``save_to_disk`` or stored as parquet (a
    file or a folder; :func:`parquet_split_files` picks the split's files as ``datasets`` does).

    Columns (Seg-Zero's evaluation sets): ``image`` (PIL), ``text`` (str; a list uses its first entry),
    ``mask`` (nested lists of bool, H x W), ``img_height``, ``img_width``. ``query``/``problem`` are accepted
    for ``text``. A ``mask`` that is a LIST of masks (``N x H x W`` nested lists, or a list of images / RLE
    dicts) is a multi-object target: its instances (``[]``: no target).
    """
    from samr1.rewards.truth import is_instance_list

    ds = _hf_dataset(path, split)
    cols = set(ds.column_names)
    text_col = next((c for c in ("text", "query", "problem") if c in cols), None)
    missing = [c for c in ("image", "mask") if c not in cols] + ([] if text_col else ["text"])
    if missing:
        raise InputError(f"{path}: the dataset lacks columns {missing} (it has {sorted(cols)}); samr1 trains on "
                         "Seg-Zero's evaluation layout: image, text, mask (nested bool lists), img_height, img_width")
    rows = []
    for i, ex in enumerate(ds):
        text = ex[text_col]
        if isinstance(text, (list, tuple)):
            text = text[0] if text else ""
        size = None
        if ex.get("img_height") is not None and ex.get("img_width") is not None:
            size = (int(ex["img_height"]), int(ex["img_width"]))
        mask, masks = ex["mask"], None
        if is_instance_list(mask):
            mask, masks = None, list(mask)
        rows.append(TrainRow(ex["image"], text if isinstance(text, str) else "", mask, f"{path} row {i}", size,
                             masks=masks))
    return rows


def _coco_rle(segmentation: Any, h: int, w: int) -> dict[str, Any]:
    """An annotation's polygons / RLE as one compressed COCO RLE dict with ``str`` counts."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, h, w)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
    else:
        raise InputError(f"unsupported segmentation of type {type(segmentation).__name__}")
    counts = rle["counts"]
    return {"size": [int(h), int(w)], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Reads a pickle of plain data (dicts, lists, str, numbers) and refuses anything that names a callable.

    ``refs(umd).p`` is a list of dicts, yet ``pickle.load`` would run whatever code a tampered file names;
    this reader makes such a file a ``pickle.UnpicklingError`` (an :class:`InputError` for the caller).
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a refs file holds plain data only")


def rows_from_refcocog(folder: str, split: str = "train", image_dir: str | None = None) -> list[TrainRow]:
    """Rows of RefCOCOg (umd): ``<folder>/instances.json`` (COCO) + ``<folder>/refs(umd).p`` (pickled refs).

    One row per sentence of every ref in ``split``; the mask is the ref's annotation (polygons or RLE,
    decoded with pycocotools into a COCO RLE dict at the image's size). Images are looked up in
    ``image_dir`` (default ``<folder>/images``, else ``<folder>/train2014``) by ``file_name``.
    """
    inst_path = os.path.join(folder, "instances.json")
    refs_path = next((p for p in (os.path.join(folder, "refs(umd).p"), os.path.join(folder, "refs(google).p"))
                      if os.path.exists(p)), None)
    if not os.path.exists(inst_path) or refs_path is None:
        raise InputError(f"{folder}: a RefCOCOg folder needs instances.json and refs(umd).p")
    try:
        with open(inst_path, encoding="utf-8") as f:
            inst = json.load(f)
        with open(refs_path, "rb") as f:
            refs = _DataOnlyUnpickler(f).load()  # the dataset's own format; only plain data is allowed
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"{folder}: cannot read instances.json / refs: {exc}") from None
    if image_dir is None:
        image_dir = next((d for d in (os.path.join(folder, "images"), os.path.join(folder, "train2014"))
                          if os.path.isdir(d)), os.path.join(folder, "images"))
    images = {im["id"]: im for im in inst.get("images", [])}
    anns = {a["id"]: a for a in inst.get("annotations", [])}
    splits = sorted({str(ref.get("split")) for ref in refs if isinstance(ref, dict)})
    try:
        named = resolve_split(split, splits)  # "validation" finds RefCOCOg's "val", as for HF data
    except ImportError:  # datasets not installed: exact names only
        named = split if split in splits else None
    if named is None:
        raise InputError(f"{refs_path}: no split {split!r}; its refs hold the splits {splits} (choose one with "
                         "--split)")
    split = named
    rows = []
    for r_i, ref in enumerate(refs):
        if ref.get("split") != split:
            continue
        where = f"{refs_path} ref {r_i} (ref_id {ref.get('ref_id')})"
        im = images.get(ref.get("image_id"))
        ann = anns.get(ref.get("ann_id"))
        for s_i, sent in enumerate(ref.get("sentences", [])):
            text = sent.get("sent", sent.get("raw", "")) if isinstance(sent, dict) else str(sent)
            pos = f"{where} sentence {s_i}"
            if im is None or ann is None:
                # Kept as a row so check_rows reports it with its position (or skips it with --skip-bad-rows).
                rows.append(TrainRow(None, text, None, pos + (": image_id not in instances.json" if im is None
                                                               else ": ann_id not in instances.json")))
                continue
            h, w = int(im["height"]), int(im["width"])
            try:
                mask: Any = _coco_rle(ann["segmentation"], h, w)
            except Exception as exc:  # noqa: BLE001 - a malformed annotation is a bad row, reported with its position
                mask = InputError(f"annotation {ann.get('id')}: {exc}")
            rows.append(TrainRow(os.path.join(image_dir, im["file_name"]), text, mask, pos, (h, w)))
    return rows


def reasonseg_mask(anno: dict[str, Any], height: int, width: int) -> np.ndarray:
    """LISA's ReasonSeg ground truth: ``H x W`` uint8, 1 = target, 255 = ignore, 0 = background.

    Polygons are drawn in file order (filled, with their 1-px outline, vertices truncated to int as LISA's
    ``cv2.fillPoly`` on int32 points); a later polygon overwrites an earlier one; "flag" shapes are skipped.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in anno.get("shapes", []):
        label = str(shape.get("label", "")).lower()
        if label == "flag":
            continue
        value = 255 if "ignore" in label else 1
        pts = [(int(x), int(y)) for x, y in shape.get("points", [])]
        if len(pts) >= 2:
            draw.polygon(pts, fill=value, outline=value)
    return np.asarray(canvas, dtype=np.uint8).copy()


def rows_from_reasonseg(folder: str) -> list[TrainRow]:
    """Rows of a ReasonSeg split folder: each ``<name>.json`` (labelme: ``text`` list, ``is_sentence``,
    ``shapes`` with "target"/"ignore" polygons) beside ``<name>.jpg``; one row per query text."""
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    if not files:
        raise InputError(f"{folder}: no ReasonSeg .json files found")
    rows = []
    for jp in files:
        stem = os.path.splitext(jp)[0]
        img = next((stem + e for e in (".jpg", ".jpeg", ".png", ".JPG") if os.path.exists(stem + e)), stem + ".jpg")
        try:
            with open(jp, encoding="utf-8") as f:
                anno = json.load(f)
        except (OSError, ValueError) as exc:
            rows.append(TrainRow(img, "", InputError(f"cannot read the annotation: {exc}"), jp))
            continue
        # a bad file is a bad row (reported, or skipped and counted with --skip-bad-rows), never a crash or a
        # silent loss: e.g. LISA's explanatory train.json (a list) beside the labelme files
        if not isinstance(anno, dict):
            rows.append(TrainRow(img, "", InputError(f"expected a labelme annotation object (text, shapes), got a "
                                                     f"JSON {type(anno).__name__}"), jp))
            continue
        texts = anno.get("text", [])
        texts = [texts] if isinstance(texts, str) else list(texts) if isinstance(texts, (list, tuple)) else None
        if not texts:
            rows.append(TrainRow(img, "", InputError("field 'text': no query (missing, empty or not a list of "
                                                     "strings)"), jp))
            continue
        for t_i, text in enumerate(texts):
            rows.append(TrainRow(img, str(text), ("reasonseg", jp), f"{jp} text {t_i}", None, ignore_value=255))
    return rows


def detect_format(path: str) -> str:
    """Guess the loader from the path: .jsonl -> manifest; .parquet or a save_to_disk folder -> hf; a folder
    with instances.json -> refcocog; a folder of .json files -> reasonseg."""
    if os.path.isfile(path):
        if path.endswith((".jsonl", ".json")):
            return "manifest"
        if path.endswith(".parquet"):
            return "hf"
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "instances.json")):
            return "refcocog"
        if (os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "dataset_dict.json"))
                or glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)):
            return "hf"
        if glob.glob(os.path.join(path, "*.json")):
            return "reasonseg"
    if not os.path.exists(path):
        raise InputError(f"--data {path}: no such file or folder")
    raise InputError(f"--data {path}: cannot tell its format; pass --data-format manifest|hf|refcocog|reasonseg")


def load_rows(path: str, data_format: str = "auto", *, split: str = "train", image_dir: str | None = None) -> list[TrainRow]:
    """Rows of ``path`` in ``data_format`` (see :func:`detect_format`). ``split`` is read by HF and RefCOCOg
    data, ``image_dir`` by RefCOCOg data only: given for another format it warns (it would change nothing)."""
    fmt = detect_format(path) if data_format == "auto" else data_format
    if image_dir is not None and fmt != "refcocog":
        import warnings

        warnings.warn(f"{path}: an images folder ({image_dir}) is read for RefCOCOg data only; this is {fmt} data, "
                      "whose rows name their own images, so it is ignored", UserWarning, stacklevel=2)
    if fmt == "manifest":
        return rows_from_manifest(path)
    if fmt == "hf":
        return rows_from_hf(path, split)
    if fmt == "refcocog":
        return rows_from_refcocog(path, split, image_dir)
    if fmt == "reasonseg":
        return rows_from_reasonseg(path)
    raise InputError(f"unknown data format {fmt!r}; choose manifest, hf, refcocog or reasonseg")


# ------------------------------------------------------------------------------------------- checks
def _load_instances(row: TrainRow) -> list[np.ndarray]:
    """The instance masks of a ``masks`` row, each ``H x W`` bool, checked to share one size."""
    out = []
    for k, m in enumerate(row.masks or []):
        arr = _load_mask_any(TrainRow(row.image, row.query, m, row.position, row.size)).astype(bool)
        if out and arr.shape != out[0].shape:
            raise InputError(f"field 'masks[{k}]': the instance is {arr.shape[0]}x{arr.shape[1]} but masks[0] is "
                             f"{out[0].shape[0]}x{out[0].shape[1]}")
        out.append(arr)
    return out


def _load_mask_any(row: TrainRow) -> np.ndarray:
    """The row's mask as an ``H x W`` uint8 (0/1, or 0/1/255 where ignore regions are kept); for a ``masks``
    row, the union of its instances (all 0 for ``[]``)."""
    if row.masks is not None:
        inst = _load_instances(row)
        if not inst:
            if row.size is None:
                raise InputError("field 'masks': the image size is unknown (load the image first)")
            return np.zeros(row.size, dtype=np.uint8)
        return np.logical_or.reduce(inst).astype(np.uint8)
    m = row.mask
    if isinstance(m, Exception):
        raise InputError(f"field 'mask': {m}")
    if isinstance(m, tuple) and len(m) == 2 and m[0] == "reasonseg":
        with open(m[1], encoding="utf-8") as f:
            anno = json.load(f)
        if row.size is None:
            raise InputError("field 'mask': the image size is unknown (load the image first)")
        return reasonseg_mask(anno, *row.size)
    if isinstance(m, (list, tuple)):  # nested lists (Seg-Zero's parquet): a ragged list is a bad row
        try:
            arr = np.asarray(m, dtype=bool)
        except ValueError:
            raise InputError("field 'mask': nested lists of unequal lengths (expected H rows of W booleans)") from None
        if arr.ndim != 2:
            raise InputError(f"field 'mask': expected H x W nested lists, got {arr.ndim} dimensions")
        return arr.astype(np.uint8)
    return load_mask(m, field="mask", source=row.position).astype(np.uint8)


def _check_one(row: TrainRow) -> tuple[np.ndarray, np.ndarray]:
    """The row's image (``H x W x 3`` uint8) and mask (``H x W`` uint8), checked against each other."""
    _check_fields(row)
    img = load_image(row.image, field="image", source=row.position)
    return img, _check_mask(row, *img.shape[:2])


def _check_fields(row: TrainRow) -> None:
    if isinstance(row.mask, InputError):  # the loader's own finding (an unreadable annotation) says the most
        raise row.mask
    if row.image is None:
        raise InputError("field 'image': the row has no image")
    if not isinstance(row.query, str) or not row.query.strip():
        raise InputError(f"field 'query': must be a non-empty string, got {row.query!r}")


def _check_mask(row: TrainRow, h: int, w: int) -> np.ndarray:
    """The row's mask, checked against its image's ``h x w`` (and the size the row declares)."""
    if row.size is not None and tuple(row.size) != (h, w):
        raise InputError(f"field 'image': the image is {h}x{w} but the row declares img_height x img_width = "
                         f"{row.size[0]}x{row.size[1]}")
    if row.size is None:
        row.size = (h, w)
    mask = _load_mask_any(row)
    if mask.shape != (h, w):
        raise InputError(f"field 'mask': the mask is {mask.shape[0]}x{mask.shape[1]} but the image is {h}x{w} "
                         "(H x W); the mask must be at the original image size")
    return mask


class _ImageSizes:
    """``(H, W)`` of image files, each decoded once however many rows name it (RefCOCOg has several sentences,
    hence rows, per image; decoding it per row cost a decode per sentence before training). Thread-safe: a
    file another thread is decoding is waited for, not decoded again. Only sizes are kept, never pixels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[str, Future] = {}

    def __call__(self, row: TrainRow) -> tuple[int, int]:
        if not isinstance(row.image, (str, os.PathLike)):
            img = load_image(row.image, field="image", source=row.position)
            return img.shape[0], img.shape[1]
        path = os.fspath(row.image)
        with self._lock:
            fut = self._by_path.get(path)
            mine = fut is None
            if mine:
                fut = self._by_path[path] = Future()
        if mine:
            try:
                img = load_image(path, field="image")  # no row position: the error is reported for each row
                fut.set_result((img.shape[0], img.shape[1]))
            except BaseException as exc:  # noqa: BLE001 - every row naming the file gets the same error
                fut.set_exception(exc)
        return fut.result()


def select_rows(rows: Sequence[TrainRow], max_samples: int | None, seed: int) -> list[int]:
    """Row indices in the order :func:`check_rows` walks them: all rows in file order, or, with
    ``max_samples``, a seeded permutation (the first ``max_samples`` good ones are kept)."""
    if max_samples is None or max_samples >= len(rows):
        return list(range(len(rows)))
    return [int(i) for i in np.random.default_rng(seed).permutation(len(rows))]


def check_rows(rows: Sequence[TrainRow], *, max_samples: int | None = None, seed: int = 0, skip_bad: bool = False,
               workers: int = 4, what: str = "training") -> tuple[list[TrainRow], list[BadRow]]:
    """Load every selected row's image and mask before training (each image file decoded once, however many
    rows name it); return (good rows, bad rows).

    Rows are walked in :func:`select_rows` order until ``max_samples`` good rows are found. A row is bad when
    its image or mask is missing or unreadable, its query is empty, or the mask's ``H x W`` differs from the
    image's. Without ``skip_bad`` any bad row raises :class:`InputError` listing the bad rows' positions
    (first 10) and how to proceed; with it they are returned for counting. ``what`` names the rows' use in
    those messages ("training", "evaluation").
    """
    order = select_rows(rows, max_samples, seed)
    want = len(order) if max_samples is None else min(max_samples, len(order))
    good: list[TrainRow] = []
    bad: list[BadRow] = []

    sizes = _ImageSizes()

    def check(i: int) -> tuple[int, str | None]:
        row = rows[i]
        try:
            _check_fields(row)
            _check_mask(row, *sizes(row))
            return i, None
        except (InputError, OSError, ValueError, TypeError) as exc:
            return i, str(exc)

    # Checks are I/O + decode bound: a few threads overlap file reads (numpy and PIL release the GIL).
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pos = 0
        while len(good) < want and pos < len(order):
            chunk = order[pos:pos + max(16, 4 * workers)]
            pos += len(chunk)
            for i, err in pool.map(check, chunk):
                if err is None:
                    if len(good) < want:
                        good.append(rows[i])
                else:
                    bad.append(BadRow(i, rows[i].position, err))
    if bad and not skip_bad:
        listed = "\n  ".join(str(b) for b in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise InputError(f"{len(bad)} bad {what} row(s) found before {what}:\n  {listed}{more}\n"
                         "fix them, or pass --skip-bad-rows to skip and count them")
    if not good:
        raise InputError(f"no usable {what} rows" + (f" ({len(bad)} bad rows skipped)" if bad else ""))
    return good, bad


# ------------------------------------------------------------------------------------------- dataset
class PolicyDataset:
    """Checked rows as TRL rows (a map-style dataset: ``len`` and ``[i]``).

    ``ds[i]`` is ``{"prompt": [user message], "image": PIL S x S (the policy's copy), "sam_image": H x W x 3
    uint8 (original), "mask": H x W bool (original; target only), "masks": the target's instances (a list of
    H x W bool; ``[mask]`` for a one-mask row, ``[]`` for an empty target), "ignore": H x W bool or None,
    "row_id": i}``. TRL's sampler asks for the same index G times in a row: a small LRU returns the very same objects
    for those copies, so the reward sees one image object per prompt (and the engine hashes it once).
    """

    def __init__(self, rows: Sequence[TrainRow], prompt_template: str = "seg-zero", policy_size: int = 840,
                 lru: int = 64):
        from samr1.train.prompts import conversation, resolve_prompt

        self.rows = list(rows)
        self.template = resolve_prompt(prompt_template)
        self.policy_size = int(policy_size)
        self._conversation = conversation
        self._lru: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self._lru_size = max(1, lru)
        self._lock = threading.Lock()  # DataLoader workers are threads only when num_workers=0; be safe anyway
        self.on_batch: Any = None  # called with a drawn batch's sam_image list (the trainer's encode-ahead hook)

    def __len__(self) -> int:
        return len(self.rows)

    def sam_columns(self, i: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        """(original image H x W x 3 uint8, the target's instance masks, each H x W bool, the ignore region
        H x W bool or None) of row ``i``."""
        item = self[i]
        return item["sam_image"], item["masks"], item["ignore"]

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        with self._lock:
            hit = self._lru.get(i)
            if hit is not None:
                self._lru.move_to_end(i)
                return dict(hit)
        row = self.rows[i]
        img, mask = _check_one(row)
        s = self.policy_size
        # Bicubic like Qwen's own resize; 840 is a multiple of 28, so the processor keeps it unchanged.
        policy = Image.fromarray(img).resize((s, s), Image.BICUBIC)
        ignore = (mask == row.ignore_value) if row.ignore_value is not None else None
        target = (mask == 1) if row.ignore_value is not None else mask.astype(bool)
        instances = [target] if row.masks is None else [m for m in _load_instances(row) if m.any()]
        item = {"prompt": self._conversation(self.template, row.query), "image": policy, "sam_image": img,
                "mask": target, "masks": instances, "ignore": ignore, "row_id": i}
        with self._lock:
            self._lru[i] = item
            if len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)
        return dict(item)

    def _transform(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        items = [self[i] for i in batch["row_id"]]
        if self.on_batch is not None:
            self.on_batch([it["sam_image"] for it in items])
        return {k: [it[k] for it in items] for k in ("prompt", "image", "sam_image", "mask", "masks", "ignore",
                                                     "row_id")}

    def as_hf(self):
        """A ``datasets.Dataset`` view for TRL (which requires one): a ``row_id`` column whose on-access
        transform returns the rows of :meth:`__getitem__` (images are loaded lazily, never copied into Arrow)."""
        import datasets

        return datasets.Dataset.from_dict({"row_id": list(range(len(self)))}).with_transform(self._transform)
