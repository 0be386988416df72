"""The prepared GPU check (bench/gpu_check.sh): its dry run end to end on the CPU, its stage bookkeeping
(timeouts, --only, refusing to overwrite), the choice of carried wheels, and the ahead-of-time Triton compile
of every kernel for sm_90 (bench/triton_aot.py), which needs no GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch
from samr1.bench import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
STATUSES = {"passed", "failed", "timeout", "skipped"}
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _env() -> dict[str, str]:
    # one thread per stage: the 2-core machine is shared; the stages run one after another
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _check(out: str, *args: str, timeout: float = 3600) -> tuple[subprocess.CompletedProcess, dict]:
    p = subprocess.run(["bash", SCRIPT, out, *args], capture_output=True, text=True, env=_env(), timeout=timeout)
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        return p, json.load(f)


def _returned_files(out: str) -> list[str]:
    """What the device tool would bring back: every file under OUT, at most 2 folders deep, each < 16 MiB."""
    found = []
    for dirpath, _, files in os.walk(out):
        for fn in files:
            rel = os.path.relpath(os.path.join(dirpath, fn), out)
            assert rel.count(os.sep) <= 2, rel
            assert os.path.getsize(os.path.join(out, rel)) < 16 * 2**20, rel
            found.append(rel)
    return sorted(found)


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    out = str(tmp_path / "out")
    p, summary = _check(out, "--dry-run")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    stages = {s["name"]: s for s in summary["stages"]}
    # every stage appears, in order, with a status, a reason when it did not pass, and its time
    assert [s["name"] for s in summary["stages"]] == list(gpu_check.STAGE_NAMES)
    for s in summary["stages"]:
        assert s["status"] in STATUSES, s
        assert isinstance(s["seconds"], float) and s["budget_s"] > 0, s
        if s["status"] != "passed":
            assert s["reason"], s
    assert summary["dry_run"] is True and summary["ok"] is True
    assert stages["install"]["status"] == "skipped" and "no install step" in stages["install"]["reason"]
    for name in ("environment", "gpu_tests", "kernels", "reward_vit_b", "multi_object", "encoder_vit_b"):
        assert stages[name]["status"] == "passed", stages[name]
    assert stages["triton_aot"]["status"] == ("passed" if HAS_TRITON else "skipped")
    # the environment stage's record reaches the summary's head
    assert summary["device"].startswith("cpu") and summary["versions"]["torch"] == torch.__version__
    # the GPU-tests stage ran pytest -m gpu on tests/test_engine.py: its CUDA-only test (marked gpu by
    # tests/conftest.py, not by hand) was selected and skipped here for want of CUDA
    tests = stages["gpu_tests"]["figures"]
    assert tests["tests"] >= 1 and tests["failures"] == tests["errors"] == 0
    assert any("CUDA" in why for why in tests["skip_reasons"]), tests
    # figures come from the benches' records: fast path and reference rows, agreement lines counted
    kernels = stages["kernels"]["figures"]
    rows = kernels["records"]["sam/bench_mask_iou"]
    assert {r["backend"] for r in rows} >= {"torch (reference)"} and kernels["agreement_lines_ok"] >= 1
    assert all("commit" not in r for r in rows)  # environment keys are kept once, not per row
    reward = stages["reward_vit_b"]["figures"]["records"]["reward_step"]
    assert {r["way"] for r in reward} == {"loop", "loop-cached", "engine-cold", "engine-warm"}
    assert all(r["max_iou_diff_vs_loop"] <= r["iou_tol"] for r in reward)
    # the multi-object stage reports the multi / single step ratio, cold and warm, from its bench's rows
    multi = stages["multi_object"]["figures"]
    rows = multi["records"]["multi_object"]
    assert {(r["step"].split()[0], r["cache"]) for r in rows} == {
        (s, c) for s in ("single-object", "multi-object") for c in ("cold", "warm")}
    by = {(r["step"].split()[0], r["cache"]): r for r in rows}
    for c in ("cold", "warm"):
        assert multi[f"ratio_{c}"] == pytest.approx(
            by["multi-object", c]["step_s"] / by["single-object", c]["step_s"], rel=1e-2)
    # at most 6 files come back, all at the top of OUT, each under 16 MiB
    files = _returned_files(out)
    assert files == sorted(summary["files"]) and len(files) <= 6
    assert set(files) <= set(gpu_check.OUT_FILES) and "summary.json" in files
    with tarfile.open(os.path.join(out, "records.tar.gz")) as tar:
        names = tar.getnames()
    assert "records/gpu_tests/junit.xml" in names and "logs/kernels.log" in names
    assert "records/kernels/sam/bench_mask_iou.jsonl" in names and "records/environment/env/packages.txt" in names
    with tarfile.open(os.path.join(out, "plots.tar.gz")) as tar:
        assert "records/kernels/sam/mask_iou.png" in tar.getnames()
    with open(os.path.join(out, "gpu_check.log"), encoding="utf-8") as f:
        log = f.read()
    assert "=== summary" in log and "=== stage kernels" in log


def test_stage_over_budget_is_stopped_and_reported(tmp_path):
    """A stage past its budget is killed and reported as timeout; the stages after it still get a status."""
    out = str(tmp_path / "out")
    p, summary = _check(out, "--dry-run", "--only", "environment,kernels", "--stage-s", "0.5", timeout=120)
    assert p.returncode == 1
    stages = {s["name"]: s for s in summary["stages"]}
    for name in ("environment", "kernels"):  # importing torch alone takes longer than 0.5 s
        assert stages[name]["status"] == "timeout" and "stopped after" in stages[name]["reason"]
        assert stages[name]["seconds"] < 30
    assert stages["reward_vit_b"] == {**stages["reward_vit_b"], "status": "skipped", "reason": "not in --only"}
    assert summary["ok"] is False and summary["status_counts"]["timeout"] == 2
    assert set(stages) == set(gpu_check.STAGE_NAMES)


def test_refuses_to_overwrite_an_earlier_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("earlier run")
    p = subprocess.run(["bash", SCRIPT, str(out), "--dry-run"], capture_output=True, text=True, env=_env(),
                       timeout=60)
    assert p.returncode == 2 and "already holds summary.json" in p.stderr
    assert (out / "summary.json").read_text() == "earlier run"
    p = subprocess.run(["bash", SCRIPT, str(tmp_path / "o2"), "--only", "nope"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert p.returncode == 2 and "unknown stage" in p.stderr
    p = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 2 and "OUT_DIR" in p.stdout


def test_select_wheels_installs_only_what_the_machine_lacks(tmp_path):
    for name in ("pytest-0.1-py3-none-any.whl", "samr1_surely_absent_pkg-0.1-py3-none-any.whl", "REPORT.txt"):
        (tmp_path / name).write_text("")
    chosen, have = gpu_check.select_wheels(str(tmp_path))
    assert [os.path.basename(c) for c in chosen] == ["samr1_surely_absent_pkg-0.1-py3-none-any.whl"]
    assert len(have) == 1 and have[0].startswith("pytest-0.1-py3-none-any.whl: the machine has pytest ")
    (tmp_path / "Samr1_Surely.Absent_pkg-0.2-py3-none-any.whl").write_text("")
    with pytest.raises(ValueError, match="two wheels of samr1-surely-absent-pkg"):
        gpu_check.select_wheels(str(tmp_path))


# ----------------------------------------------------------------------------- ahead-of-time Triton compile
requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


@requires_triton
def test_every_kernel_compiles_for_sm90_without_a_gpu(tmp_path):
    """Every ``*_kernel`` of samr1.kernels, with the types its op launches it with, builds a cubin for sm_90 with
    the installed Triton (a fresh process: the kernels must not be imported under TRITON_INTERPRET)."""
    env = {k: v for k, v in _env().items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, "-m", "samr1.bench.triton_aot", "--target", "cuda:90:32", "--out",
                        str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(tmp_path / "triton_aot.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert {r["kernel"] for r in rows} == {"mask_iou._mask_iou_kernel", "mask_iou_sam2._mask_iou_sam2_kernel",
                                           "prompt_pack._prompt_pack_kernel"}
    for r in rows:
        assert r["ok"] and r["cubin_bytes"] > 0 and r["target"] == "cuda:90:32", r
    # the CUDA tile configuration was compiled, not the interpreter's
    from samr1.kernels import mask_iou

    block_r, block_w, warps = mask_iou.TILES["cuda"]
    row = next(r for r in rows if r["kernel"] == "mask_iou._mask_iou_kernel")
    assert f"BLOCK_R={block_r}" in row["constexprs"] and f"BLOCK_W={block_w}" in row["constexprs"]
    assert row["num_warps"] == warps


@requires_triton
def test_aot_reports_a_kernel_that_does_not_compile():
    import triton
    import triton.language as tl
    from samr1.bench import triton_aot

    @triton.jit
    def broken_kernel(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, n)  # n is not a constexpr: Triton refuses to build this
        tl.store(x_ptr + offs, 0.0)

    spec = triton_aot.compile_spec(broken_kernel, (torch.zeros(8), 5), {"BLOCK": 16, "num_warps": 2})
    assert spec["signature"] == {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    assert spec["constexprs"] == {"BLOCK": 16} and spec["options"] == {"num_warps": 2}
    row = triton_aot.compile_one(broken_kernel, spec, triton_aot.parse_target("cuda:90:32"))
    assert row["ok"] is False and row["error"]
    with pytest.raises(ValueError, match="cuda:90:32"):
        triton_aot.parse_target("sm90")
