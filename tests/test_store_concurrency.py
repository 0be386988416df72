"""Embedding-store concurrency with real processes: the writer lock (refuse at once naming the holder, or wait
and resume), readers that never see a half-written row, a writer killed mid-run, two ``samr1 embed``
processes on one store, and ``samr1 embed`` committing what it encoded before a bad image stops it
(``--skip-bad-rows`` skips and counts instead).

Every child process is bounded by a timeout (``_TIMEOUT``); no test asserts a wall-clock time. Float16
tolerance for embeddings against a fresh encode: rtol 1e-3, atol 1e-3 (values ~N(0, 1)).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from samr1.io import InputError
from samr1.store import EmbeddingStore, StoreError, StoreLockedError

SHAPE = (8, 4, 6)
_TIMEOUT = 300  # seconds any child may take (importing torch on a busy 2-core machine takes ~10-20 s)


def _env():
    # One thread per child: the tests share two cores with each other and with the test process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _child(body: str, *args: str) -> subprocess.Popen:
    """A Python child running ``body`` (indented freely) after :data:`_CHILD_HEADER`."""
    script = _CHILD_HEADER + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _expect_line(proc: subprocess.Popen, want: str) -> str:
    line = proc.stdout.readline()
    if not line.startswith(want):
        proc.kill()
        raise AssertionError(f"child said {line!r}, expected {want!r}; stderr:\n{proc.communicate()[1]}")
    return line


def _row(i: int, shape=SHAPE) -> np.ndarray:
    """The deterministic content of row ``i`` (float16-exact), restated independently by the children."""
    return np.random.default_rng(1000 + i).standard_normal(shape).astype(np.float16)


_CHILD_HEADER = """import os, sys
import numpy as np
from samr1.store import EmbeddingStore
def row(i, shape):
    return np.random.default_rng(1000 + i).standard_normal(shape).astype(np.float16)
"""


# ----------------------------------------------------------------------------------------- the lock


def test_second_writer_refused_naming_holder_then_waits_and_resumes(tmp_path):
    path = tmp_path / "s"
    child = _child(
        """
        s = EmbeddingStore.create(sys.argv[1], "m", (8, 4, 6), 1024)
        print("locked", flush=True)
        sys.stdin.readline()                          # the parent says when to write
        s.put([f"k{i}" for i in range(5)], np.stack([row(i, (8, 4, 6)) for i in range(5)]), [(i + 1, 9) for i in range(5)])
        s.close()
        print("done", flush=True)
        """, str(path))
    try:
        _expect_line(child, "locked")
        with pytest.raises(StoreLockedError) as info:
            EmbeddingStore.create(path, "m", SHAPE, 1024)
        holder = info.value.holder
        assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
        started = datetime.datetime.fromisoformat(holder["started"])
        assert abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 3600
        assert f"pid {child.pid}" in str(info.value) and "--wait" in str(info.value)
        with pytest.raises(StoreLockedError, match=f"pid {child.pid}.*after waiting 0.3 s"):
            EmbeddingStore.create(path, "m", SHAPE, 1024, wait=0.3)
        with pytest.raises(StoreLockedError):
            EmbeddingStore.open(path, "m", writable=True)
        # readers take no lock
        assert len(EmbeddingStore.open(path, "m")) == 0

        # a second writer that waits: it must not get in while the child holds the lock, and must then
        # resume from the child's rows (overlapping keys skipped, its own rows appended after them)
        got: dict[str, object] = {}

        def wait_then_write():
            try:
                s = EmbeddingStore.create(path, "m", SHAPE, 1024, wait=_TIMEOUT)
                got["seen"] = sorted(s.keys())
                got["written"] = s.put([f"k{i}" for i in range(3, 8)], np.stack([_row(i) for i in range(3, 8)]),
                                       [(i + 1, 9) for i in range(3, 8)])
                s.close()
            except Exception as exc:  # noqa: BLE001 - reported below
                got["error"] = exc

        waiter = threading.Thread(target=wait_then_write)
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not got, "the waiting writer got in while the child held the lock"
        child.stdin.write("go\n")
        child.stdin.flush()
        _expect_line(child, "done")
        waiter.join(_TIMEOUT)
        assert "error" not in got, got.get("error")
        assert got["seen"] == [f"k{i}" for i in range(5)] and got["written"] == 3
    finally:
        child.kill()
        child.communicate()
    store = EmbeddingStore.open(path, "m")
    assert sorted(store.keys()) == [f"k{i}" for i in range(8)]
    for i in range(8):
        emb, size = store.get_with_size(f"k{i}")
        np.testing.assert_array_equal(emb.numpy(), _row(i))
        assert size == (i + 1, 9)


def test_writer_killed_mid_run_releases_the_lock_and_keeps_committed_rows(tmp_path):
    """A reader polls while a child writes and flushes row by row (growing and remapping the file), then the
    child dies with one row written but not flushed: no reader ever sees a row that differs from what was
    written, the lock dies with the child, and the next writer resumes from the committed rows."""
    path = tmp_path / "s"
    shape = (16, 32, 32)  # 32 KiB rows: 40 rows grow the file twice past its first capacity (16)
    n = 40
    child = _child(
        """
        shape = (16, 32, 32)
        s = EmbeddingStore.create(sys.argv[1], "m", shape, 1024)
        s.flush()
        print("ready", flush=True)
        for i in range(int(sys.argv[2])):
            s.put([f"k{i}"], row(i, shape)[None], [(1 + i % 1024, 1024)])
            s.flush()
        s.put(["lost"], row(999, shape)[None], [(1, 1)])  # written, never flushed
        os._exit(3)                                         # no close(), no flush: a crash
        """, str(path), str(n))
    try:
        _expect_line(child, "ready")
        seen_counts = []
        deadline = time.monotonic() + _TIMEOUT
        while True:
            done = child.poll() is not None
            assert done or time.monotonic() < deadline, "the writer child hung"
            store = EmbeddingStore.open(path, "m")
            keys = store.keys()
            assert "lost" not in keys
            for k in keys:
                i = int(k[1:])
                emb, size = store.get_with_size(k)
                np.testing.assert_array_equal(emb.numpy(), _row(i, shape), err_msg=f"row {k} read half-written")
                assert size == (1 + i % 1024, 1024)
            seen_counts.append(len(keys))
            if done:
                break
            time.sleep(0.02)  # leave the child some of the two cores
        assert child.wait(_TIMEOUT) == 3, child.stderr.read()
    finally:
        child.kill()
        child.communicate()
    assert seen_counts[-1] == n and seen_counts == sorted(seen_counts)  # rows only ever appear, in order
    resumed = EmbeddingStore.create(path, "m", shape, 1024)  # wait=0: the dead child's lock is gone
    assert sorted(resumed.keys(), key=lambda k: int(k[1:])) == [f"k{i}" for i in range(n)]
    assert resumed.put(["lost"], torch.from_numpy(_row(7, shape))[None], [(1, 1)]) == 1
    resumed.close()
    np.testing.assert_array_equal(EmbeddingStore.open(path, "m").get("lost").numpy(), _row(7, shape))


def test_read_only_open_never_creates_a_lock_or_folder(tmp_path):
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore.open(tmp_path / "none", "m", writable=True)
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------------- samr1 embed


def _images(tmp_path, n, rng, start=0):
    paths, arrays = [], []
    for i in range(start, start + n):
        arr = rng.integers(0, 256, (int(rng.integers(9, 40)), int(rng.integers(9, 40)), 3), dtype=np.uint8)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
        arrays.append(arr)
    return paths, arrays


def _manifest(path, image_paths):
    path.write_text("".join(json.dumps({"image": str(p), "query": "q"}) + "\n" for p in image_paths))
    return path


def _embed_cli(argv, capsys):
    """Run ``samr1 embed`` in this process: (exit code, stdout, stderr or the escaped error's message).

    A user error may surface as an exception or as main()'s one-line message and exit code: both are
    accepted, a traceback-free nonzero exit is what matters."""
    from samr1.cli import main

    try:
        rc = main(["embed", *argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except (InputError, StoreError) as exc:
        out = capsys.readouterr()
        return 1, out.out, str(exc)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def shapes_encoder():
    from samr1.sam import load_sam
    from samr1.sam.encoder import make_encoder

    return make_encoder(load_sam("tiny-shapes"), backend="torch")


def _check_store(path, encoder, arrays):
    store = EmbeddingStore.open(path, encoder.model_id)
    assert len(store) == len(arrays)
    ref = encoder.encode(arrays)
    sizes = encoder.input_sizes(arrays)
    for i, arr in enumerate(arrays):
        emb, size = store.get_with_size(store.key(arr))
        torch.testing.assert_close(emb.float(), ref[i], rtol=1e-3, atol=1e-3)
        assert size == sizes[i]


def test_two_embed_processes_started_together(tmp_path, shapes_encoder):
    """Two ``samr1 embed`` on one store with overlapping manifests: both succeed, every image is encoded once
    (the second resumes from the first one's rows) and every row is the right image's embedding."""
    rng = np.random.default_rng()
    paths, arrays = _images(tmp_path, 9, rng)
    ma = _manifest(tmp_path / "a.jsonl", paths[:6])
    mb = _manifest(tmp_path / "b.jsonl", paths[3:])
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "samr1.cli", "embed", "--out", str(out), "--sam", "tiny-shapes", "--device", "cpu",
           "--batch", "2", "--no-progress", "--wait", str(_TIMEOUT)]
    procs = [subprocess.Popen([*cmd, "--data", str(m)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for m in (ma, mb)]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=_TIMEOUT)
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            p.kill()
    for rc, _, stderr in results:
        assert rc == 0, stderr
    encoded = [int(stdout.split("encoded ")[1].split(",")[0]) for _, stdout, _ in results]
    assert sum(encoded) == 9, encoded  # the three shared images were encoded by one writer only
    _check_store(out, shapes_encoder, arrays)


def test_embed_refused_at_once_while_another_writer_holds_the_store(tmp_path, capsys, shapes_encoder):
    paths, _ = _images(tmp_path, 1, np.random.default_rng())
    m = _manifest(tmp_path / "d.jsonl", paths)
    holder = EmbeddingStore.create(tmp_path / "store", shapes_encoder.model_id, shapes_encoder.embedding_shape,
                                   shapes_encoder.frame)
    try:
        rc, _, err = _embed_cli(["--data", str(m), "--out", str(tmp_path / "store"), "--sam", "tiny-shapes",
                                 "--device", "cpu", "--no-progress"], capsys)
    finally:
        holder.close()
    from samr1.cli import EXIT_BUSY

    assert rc == EXIT_BUSY and f"pid {os.getpid()}" in err and socket.gethostname() in err and "--wait" in err
    assert len(EmbeddingStore.open(tmp_path / "store", shapes_encoder.model_id)) == 0


def test_embed_commits_encoded_rows_before_reporting_a_bad_image(tmp_path, capsys, shapes_encoder):
    rng = np.random.default_rng()
    paths, arrays = _images(tmp_path, 4, rng)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 64, dtype=np.uint8)))  # truncated PNG
    thin = tmp_path / "thin.png"
    Image.fromarray(np.zeros((1, 3000, 3), np.uint8)).save(thin)  # 0 px tall in the 384 frame
    # batch 2: [im0, im1] [im2, broken] [im3, thin] [im0 again]
    m = _manifest(tmp_path / "d.jsonl", [paths[0], paths[1], paths[2], bad, paths[3], thin, paths[0], bad])
    out = tmp_path / "store"
    argv = ["--data", str(m), "--out", str(out), "--sam", "tiny-shapes", "--device", "cpu", "--batch", "2",
            "--no-progress"]
    rc, _, err = _embed_cli(argv, capsys)
    assert rc != 0 and str(bad) in err and f"{m}:4" in err  # the file and the manifest line
    _check_store(out, shapes_encoder, arrays[:2])  # the chunk encoded before the bad one is committed

    rc, stdout, err = _embed_cli([*argv, "--skip-bad-rows"], capsys)
    assert rc == 0, err
    assert "encoded 2," in stdout and "bad 2 image files (3 rows)" in stdout
    assert "skipped 3 bad rows (2 image files)" in err and f"{m}:4" in err and f"{m}:6" in err
    assert str(bad) in err and "aspect ratio" in err
    _check_store(out, shapes_encoder, arrays)
    # the lock was released: a third run opens the store for writing and finds nothing left to do
    rc, stdout, _ = _embed_cli([*argv, "--skip-bad-rows"], capsys)
    assert rc == 0 and "encoded 0," in stdout
