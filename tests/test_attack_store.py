"""Attack suite, embedding store: damage a real store (built by ``samr1 embed`` with the shipped tiny-shapes SAM)
in every way a disk, a copy or a hand edit can, and check that no damaged row is ever served as a hit:

- row data: zeroed, random, one value nudged, NaN, a row in index.log;
- index: two keys swapped (in index.json and in index.log), an input size edited (to another valid size too),
  a digest edited;
- the append-only index: a torn last log line, a damaged line, a line disagreeing with index.json, the
  number of whole-index writes over many flushes;
- stores written before digests (format 1): read with a warning, upgraded by a writer;
- ``samr1 embed --out`` over folders it did not write: refused before anything (a lock file included) is
  written there; ``--overwrite`` replaces only the store's files.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from samr1.store import EmbeddingStore, StoreError, StoreWarning


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 5-image store and its manifest, built once by the CLI; tests damage copies of it."""
    from samr1.cli import main
    from samr1.train.scene_data import write_scene_manifest

    root = tmp_path_factory.mktemp("store")
    manifest = write_scene_manifest(root / "data", 5, size=None, seed=21)
    assert main(["embed", "--data", str(manifest), "--out", str(root / "s"), "--sam", "tiny-shapes", "--device",
                 "cpu", "--no-progress"]) == 0
    return root / "s", manifest


@pytest.fixture(scope="module")
def images(built):
    from samr1.data import read_manifest
    from samr1.io import load_image

    return [load_image(s.image) for s in read_manifest(built[1])]


def _row_bytes(store_dir) -> int:
    meta = json.loads((store_dir / "index.json").read_text())
    return int(np.prod(meta["shape"])) * 2


def _answers(images):
    from samr1.answer import parse_answer

    out = []
    for img in images:
        h, w = img.shape[:2]
        text = f'<answer>{{"bbox": [{w * 0.2:.1f}, {h * 0.2:.1f}, {w * 0.7:.1f}, {h * 0.8:.1f}], ' \
               f'"points_1": [{w * 0.45:.1f}, {h * 0.5:.1f}]}}</answer>'
        out.append(parse_answer(text, image_size=(h, w), model_size=(h, w), require_points=False))
    return out


def _masks(images):
    return [np.pad(np.ones((img.shape[0] // 2, img.shape[1] // 2), bool),
                   ((0, img.shape[0] - img.shape[0] // 2), (0, img.shape[1] - img.shape[1] // 2))) for img in images]


def _score(store_dir, images):
    """(IoUs, engine stats, StoreWarning messages) of an engine reading ``store_dir``."""
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = SamEngine(load_sam("tiny-shapes"), store=str(store_dir))
        ious = engine.score(images, _answers(images), _masks(images))
    said = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    return ious, engine.stats, said


def _keys_by_row(store_dir) -> list[str]:
    meta = json.loads((store_dir / "index.json").read_text())
    return [k for k, _ in sorted(meta["keys"].items(), key=lambda kv: kv[1])]


def _edit_index(store_dir, fn) -> None:
    path = store_dir / "index.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _edit_row(store_dir, row: int, fn) -> None:
    rb = _row_bytes(store_dir)
    with open(store_dir / "embeddings.f16", "r+b") as f:
        f.seek(row * rb)
        values = np.frombuffer(f.read(rb), np.float16).copy()
        fn(values)
        f.seek(row * rb)
        f.write(values.tobytes())


def _swap_keys(meta, a, b):
    keys = sorted(meta["keys"], key=meta["keys"].get)
    ka, kb = keys[a], keys[b]
    meta["keys"][ka], meta["keys"][kb] = meta["keys"][kb], meta["keys"][ka]


def _nudge(v):
    v[int(np.random.default_rng().integers(v.size))] += np.float16(0.01)


def _row(store_dir, row: int, fn) -> list[int]:
    _edit_row(store_dir, row, fn)
    return [row]


def _index(store_dir, rows: list[int], fn) -> list[int]:
    _edit_index(store_dir, fn)
    return rows


def _transpose_a_size(store_dir) -> list[int]:
    meta = json.loads((store_dir / "index.json").read_text())
    row = next(i for i, (h, w) in enumerate(meta["input_sizes"]) if h != w)  # the scenes are not all square
    return _index(store_dir, [row], lambda m: m["input_sizes"].__setitem__(row, m["input_sizes"][row][::-1]))


def _random(v):
    v[:] = np.random.default_rng().standard_normal(v.size).astype(np.float16)


def _nan(v):
    v[7] = np.nan


# name -> damage(store folder) -> the rows it damaged
DAMAGE = {
    "zeroed-row": lambda d: _row(d, 1, lambda v: v.fill(0)),
    "random-row": lambda d: _row(d, 2, _random),
    "one-value-nudged": lambda d: _row(d, 3, _nudge),
    "nan-value": lambda d: _row(d, 0, _nan),
    "two-keys-swapped": lambda d: _index(d, [0, 4], lambda m: _swap_keys(m, 0, 4)),
    "input-size-to-1x1": lambda d: _index(d, [2], lambda m: m["input_sizes"].__setitem__(2, [1, 1])),
    "input-size-transposed": _transpose_a_size,
    "input-size-one-off": lambda d: _index(d, [3], lambda m: m["input_sizes"].__setitem__(
        3, [m["input_sizes"][3][0] - 1, m["input_sizes"][3][1]])),
    "digest-edited": lambda d: _index(d, [4], lambda m: m["digests"].__setitem__(4, "0" * 32)),
}


@pytest.fixture(scope="module")
def intact(built, images):
    ious, stats, said = _score(built[0], images)
    assert stats["store_hits"] == len(images) and not said
    return ious


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_row_is_never_served(built, images, intact, tmp_path, name):
    store = tmp_path / "s"
    shutil.copytree(built[0], store)
    keys = _keys_by_row(store)
    rows = DAMAGE[name](store)
    ious, stats, said = _score(store, images)
    # every damaged row re-encoded with a warning naming its image; the others still come from the store
    assert stats["store_damaged"] == len(rows), (stats, said)
    assert stats["store_hits"] == len(images) - len(rows)
    assert all(any(keys[r] in m for m in said) for r in rows), said
    # the IoUs are what an intact store gives (float16 rows vs fresh float32 encodes: within 2e-2)
    assert ious == pytest.approx(intact, abs=2e-2)


def test_rows_added_to_the_log_are_checked_too(built, images, intact, tmp_path):
    """Rows added after index.json was written live in index.log: damage there is caught the same way."""
    store = tmp_path / "s"
    shutil.copytree(built[0], store)
    meta = json.loads((store / "index.json").read_text())
    # move the last two rows out of index.json into index.log, as a resumed writer leaves them
    keys = _keys_by_row(store)
    lines = [json.dumps([r, keys[r], *meta["input_sizes"][r], meta["digests"][r]]) for r in (3, 4)]
    for r in (3, 4):
        del meta["keys"][keys[r]]
    meta.update(rows=3, input_sizes=meta["input_sizes"][:3], digests=meta["digests"][:3])
    (store / "index.json").write_text(json.dumps(meta))
    (store / "index.log").write_text("\n".join(lines) + "\n")
    assert len(EmbeddingStore.open(store, None)) == 5
    ious, stats, _ = _score(store, images)
    assert stats["store_hits"] == 5 and ious == pytest.approx(intact, abs=2e-2)
    swapped = [json.loads(x) for x in lines]
    swapped[0][1], swapped[1][1] = swapped[1][1], swapped[0][1]  # two keys swapped inside the log
    (store / "index.log").write_text("".join(json.dumps(x) + "\n" for x in swapped))
    ious, stats, said = _score(store, images)
    assert stats["store_damaged"] == 2 and ious == pytest.approx(intact, abs=2e-2)


# ------------------------------------------------------------------------------------------- the log


def _small_store(path, rows: int, start: int = 0):
    store = EmbeddingStore.create(path, "m", (2, 3, 4), 64, encoder="torch-fp32")
    rng = np.random.default_rng()
    for i in range(start, start + rows):
        store.put([f"k{i}"], rng.standard_normal((1, 2, 3, 4)), [(64, 58)])
        store.flush()
    return store


def test_flushes_append_and_fold_the_log_in_geometrically(tmp_path, monkeypatch):
    import samr1.store as store_mod

    writes = []
    real = store_mod.atomic_write_json
    monkeypatch.setattr(store_mod, "atomic_write_json", lambda p, obj: (writes.append(obj["rows"]), real(p, obj)))
    store = _small_store(tmp_path / "s", 100)
    store.close()
    # 100 one-row flushes: index.json written when the log held as many rows as it (1, 2, 4, ... 64 rows)
    assert writes == [0, 1, 2, 4, 8, 16, 32, 64], writes
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    log = (tmp_path / "s" / "index.log").read_text().splitlines()
    assert meta["rows"] == 64 and len(log) == 36
    again = EmbeddingStore.open(tmp_path / "s", "m")
    assert len(again) == 100 and all(again.get(k) is not None for k in again.keys())


def test_a_torn_last_log_line_is_ignored_by_readers_and_dropped_by_a_writer(tmp_path):
    _small_store(tmp_path / "s", 3).close()
    store = EmbeddingStore.create(tmp_path / "s", "m", (2, 3, 4), 64, encoder="torch-fp32")
    store.put(["k-extra"], np.ones((1, 2, 3, 4)), [(64, 29)])
    store.flush()
    store.close()
    log = tmp_path / "s" / "index.log"
    whole = log.read_bytes()
    log.write_bytes(whole + b'[4, "k-torn", 64')  # a writer stopped mid-line
    reader = EmbeddingStore.open(tmp_path / "s", "m")
    assert len(reader) == 4
    writer = EmbeddingStore.create(tmp_path / "s", "m", (2, 3, 4), 64, encoder="torch-fp32")
    assert log.read_bytes() == whole and len(writer) == 4
    writer.close()


@pytest.mark.parametrize("line,says", [
    (b"not json\n", "line 1 is not a JSON line"),
    (b'[2, "k", 64, 58]\n', "line 1 must be [row, image key, h, w, digest]"),
    (b'[2, "k", 64, 5000, "ab"]\n', "h, w in 1..64"),
    (b'[7, "k", 64, 58, "ab"]\n', "line 1 is row 7, expected row 2"),  # index.json holds rows 0 and 1
    (b'[2, "k", 64, 58, "not hex"]\n', "must be [row, image key, h, w, digest]"),
    (b'[2, "k0", 64, 58, "ab"]\n', "already has row 0"),
    (b'[0, "other", 64, 58, "ab"]\n', "differs from that row in index.json"),
    (b"[" * 5000 + b"\n", "line 1 is not a JSON line"),
])
def test_a_damaged_log_line_is_a_store_error_naming_it(tmp_path, line, says):
    _small_store(tmp_path / "s", 3).close()
    (tmp_path / "s" / "index.log").write_bytes(line)
    with pytest.raises(StoreError, match="index.log") as info:
        EmbeddingStore.open(tmp_path / "s", "m")
    assert says in str(info.value)


def test_a_stop_between_writing_index_json_and_emptying_the_log_loses_nothing(tmp_path):
    store = _small_store(tmp_path / "s", 6)
    log_before = (tmp_path / "s" / "index.log").read_bytes()
    assert log_before  # rows 4 and 5 are in the log
    store._write_snapshot()  # index.json now holds all six ...
    (tmp_path / "s" / "index.log").write_bytes(log_before)  # ... but the log was not emptied yet
    store.close()
    again = EmbeddingStore.open(tmp_path / "s", "m")
    assert len(again) == 6 and all(again.get(k) is not None for k in again.keys())


def test_a_format_1_store_is_read_with_a_warning_and_upgraded_by_a_writer(tmp_path):
    _small_store(tmp_path / "s", 4).close()
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    meta.pop("digests")
    (tmp_path / "s" / "index.json").write_text(json.dumps({**meta, "format": 1}))
    with pytest.warns(StoreWarning, match="format 1"):
        assert len(EmbeddingStore.open(tmp_path / "s", "m")) == 4
    writer = EmbeddingStore.create(tmp_path / "s", "m", (2, 3, 4), 64, encoder="torch-fp32")
    writer.close()
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    assert meta["format"] == 2 and len(meta["digests"]) == 4
    _edit_row(tmp_path / "s", 2, lambda v: v.fill(0))
    reader = EmbeddingStore.open(tmp_path / "s", "m")
    from samr1.store import StoreRowError

    with pytest.raises(StoreRowError, match="does not match the digest"):
        reader.get(_keys_by_row(tmp_path / "s")[2])


# ------------------------------------------------------------------------------------------- embed --out


def _tree(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


FOREIGN = {
    "stray-data-file": {"embeddings.f16": b"user data " * 10},
    "unrelated-index": {"index.json": b'{"what": "my own index"}'},
    "log-without-index": {"index.log": b'[0, "k", 1, 1, "ab"]\n'},
    "other-files": {"notes.txt": b"mine", "photo.png": b"\x89PNG..."},
    "data-and-lock": {"embeddings.f16": b"x" * 64, "writer.lock": b""},
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_embed_refuses_a_folder_it_did_not_write_and_leaves_it_as_it_was(built, tmp_path, capsys, name):
    from samr1.cli import main

    out = tmp_path / "out"
    out.mkdir()
    for fname, data in FOREIGN[name].items():
        (out / fname).write_bytes(data)
    before = _tree(out)
    rc = main(["embed", "--data", str(built[1]), "--out", str(out), "--sam", "tiny-shapes", "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc in (3, 6) and "samr1 embed: error:" in err and str(out) in err, (rc, err)
    assert _tree(out) == before  # nothing written, no lock file left behind


@pytest.mark.parametrize("name", ["stray-data-file", "other-files", "unrelated-index"])
def test_embed_overwrite_replaces_only_the_store_files(built, tmp_path, capsys, name):
    from samr1.cli import main

    out = tmp_path / "out"
    out.mkdir()
    for fname, data in FOREIGN[name].items():
        (out / fname).write_bytes(data)
    assert main(["embed", "--data", str(built[1]), "--out", str(out), "--sam", "tiny-shapes", "--device", "cpu",
                 "--no-progress", "--overwrite"]) == 0
    store = EmbeddingStore.open(out, None)
    assert len(store) == 5
    for fname, data in FOREIGN[name].items():
        if fname not in ("embeddings.f16", "index.json", "index.log"):
            assert (out / fname).read_bytes() == data  # the user's other files stay


def test_embed_resumes_its_own_store(built, tmp_path, capsys):
    from samr1.cli import main

    shutil.copytree(built[0], tmp_path / "s")
    capsys.readouterr()
    assert main(["embed", "--data", str(built[1]), "--out", str(tmp_path / "s"), "--sam", "tiny-shapes", "--device",
                 "cpu", "--no-progress"]) == 0
    assert "encoded 0, skipped 5" in capsys.readouterr().out
