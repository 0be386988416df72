"""Fetch the wheels the GPU check needs that the lent GPU machines' image lacks, for CPython 3.12 on Linux x86_64.

    python bench/gpu_wheels.py [--out gpu_wheels] [--max-mib 40]        (what ``make gpu-wheels`` runs)

The GPU machine reaches no package index: what it lacks travels with the working tree as wheels, and
``bench/gpu_check.sh --wheels DIR`` installs each one whose distribution is missing there. Starting from
``NEEDED``, this walks every wheel's ``Requires-Dist`` (markers evaluated for CPython 3.12 on Linux x86_64;
extras not followed). A requirement the image meets (``IMAGE``) is not fetched: its version is checked
against ``IMAGE_VERSIONS`` where known and listed as unchecked otherwise. Anything else is downloaded as a
binary wheel (``pip download --only-binary=:all: --python-version 3.12``); a package published only as a
source distribution is built here with ``pip wheel`` and kept when that gives a pure-Python wheel.
Versions: the exact pin of constraints.txt when it lists the package (what the project is tested with),
else the newest pip finds.

The folder must stay under ``--max-mib``: ``NEEDED`` is taken in order, and a package (with what only it
pulls in) that would push the folder over is left out with the reason. ``REPORT.txt`` in the folder says
what was fetched, what the image is trusted to hold, what was left out and why; it is printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# What the check needs beyond the image, most important first: (distribution, what needs it).
NEEDED: tuple[tuple[str, str], ...] = (
    ("segment-anything", "every SAM stage (the upstream model, SamPredictor: the reference loop)"),
    ("trl", "the grpo stage (TRL's GRPOTrainer)"),
    ("sam2", "the sam2 stage (SAM 2 kinds)"),
)

# The lent GPU machines' image ('cuda'), as last read there on 2026-11-17: its Python distributions.
IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())
# the versions seen there (the rest of IMAGE: version not known here, reported as unchecked)
IMAGE_VERSIONS = {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "onnx": "1.23.1", "onnxruntime": "1.30.0",
    "onnxscript": "0.7.2", "safetensors": "0.8.0", "tokenizers": "0.23.2", "torch": "2.11.0", "torchvision": "0.26.0",
    "torchaudio": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0", "sentencepiece": "0.2.2",
}
PYTHON = "3.12"
MARKER_ENV = {"python_version": PYTHON, "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(path: str = os.path.join(ROOT, "constraints.txt")) -> dict[str, str]:
    """``name -> exact version`` from constraints.txt (comments and blank lines skipped)."""
    pins = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if "==" in line:
                    name, ver = line.split("==", 1)
                    pins[norm(name)] = ver.strip()
    except OSError:
        pass
    return pins


def requirements_of(wheel: str) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` that apply on CPython 3.12 / Linux x86_64 without extras."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", errors="replace")
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate(MARKER_ENV):
            out.append(req)
    return out


def _pip(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


def fetch(name: str, version: str | None, dest: str, work: str) -> tuple[str | None, str]:
    """Download (or build) one wheel of ``name`` into ``dest``; (path or None, how / why not)."""
    spec = f"{name}=={version}" if version else name
    before = set(os.listdir(dest))
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    p = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
             "--abi", "cp312", "--abi", "abi3", "--abi", "none", *plat, "-d", dest, spec)
    new = sorted(set(os.listdir(dest)) - before)
    if p.returncode == 0 and new:
        return os.path.join(dest, new[0]), "downloaded"
    # no binary wheel: build the source distribution here, keep it if the wheel is pure Python
    src = os.path.join(work, "sdist-" + norm(name))
    os.makedirs(src, exist_ok=True)
    p = _pip("download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d", src, spec)
    if p.returncode != 0 or not os.listdir(src):
        return None, (f"no wheel for CPython {PYTHON} manylinux x86_64, and its source distribution could not be "
                      f"prepared with {sys.executable} ({_last(p)}); preparing one may need packages this "
                      "interpreter lacks (sam2's setup imports torch): run it with the project's venv, as "
                      "make gpu-wheels does")
    built = os.path.join(work, "built-" + norm(name))
    env = {**os.environ, "SAM2_BUILD_CUDA": "0"}  # sam2: its optional CUDA extension is skipped (runs without it)
    p = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", built, os.path.join(src, os.listdir(src)[0]), env=env)
    wheels = [w for w in os.listdir(built)] if os.path.isdir(built) else []
    if p.returncode != 0 or not wheels:
        return None, f"its source distribution did not build here ({_last(p)})"
    if not wheels[0].endswith("-py3-none-any.whl"):
        return None, f"it builds a platform wheel here ({wheels[0]}: this machine's Python, not {PYTHON})"
    shutil.copy(os.path.join(built, wheels[0]), dest)
    return os.path.join(dest, wheels[0]), "built here from its source distribution (pure Python)"


def _last(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else f"exit {p.returncode}"


@dataclass
class Plan:
    fetched: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (wheel path, how)
    image: dict[str, set[str]] = field(default_factory=dict)  # name -> the requirements it must meet
    conflicts: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def resolve(root: str, pins: dict[str, str], dest: str, work: str, plan: Plan) -> tuple[list[str], str | None]:
    """Fetch ``root`` and what it needs that neither the image nor ``plan`` already has. Returns the names
    fetched for it and, if one could not be had, why (then nothing of it is kept)."""
    mine: list[str] = []
    queue = [Requirement(root)]
    while queue:
        req = queue.pop(0)
        name = norm(req.name)
        if name in IMAGE:
            plan.image.setdefault(name, set()).add(str(req.specifier) or "any")
            known = IMAGE_VERSIONS.get(name)
            if known and req.specifier and not req.specifier.contains(Version(known), prereleases=True):
                plan.conflicts.append(f"{req} is required, the image has {name} {known}")
            continue
        if name in plan.fetched or name in mine:
            continue
        path, how = fetch(name, pins.get(name), dest, work)
        if path is None:
            for n in mine:
                os.remove(plan.fetched.pop(n)[0])
            return [], f"{name}: {how}"
        plan.fetched[name] = (path, how)
        mine.append(name)
        queue.extend(requirements_of(path))
    return mine, None


def build(out: str, max_mib: float) -> Plan:
    """Fill ``out`` with the wheels of NEEDED (see the module docstring); write and print REPORT.txt."""
    os.makedirs(out, exist_ok=True)
    stale = [f for f in os.listdir(out) if f.endswith(".whl")]
    if stale:
        raise SystemExit(f"{out} already holds wheels ({', '.join(stale[:3])}...); remove them or give another --out")
    pins = constraint_pins()
    plan = Plan()
    cap = int(max_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="samr1-gpu-wheels-") as work:
        for root, why in NEEDED:
            mine, failed = resolve(root, pins, out, work, plan)
            if failed:
                plan.left_out.append(f"{root} (for {why}): {failed}")
                continue
            total = sum(os.path.getsize(p) for p, _ in plan.fetched.values())
            if total > cap:
                size = sum(os.path.getsize(plan.fetched[n][0]) for n in mine)
                for n in mine:
                    os.remove(plan.fetched.pop(n)[0])
                plan.left_out.append(f"{root} (for {why}): its {len(mine)} wheels ({size / 2**20:.1f} MiB) would take "
                                     f"the folder over {max_mib:g} MiB")
    report = render(plan, out, max_mib)
    with open(os.path.join(out, "REPORT.txt"), "w", encoding="utf-8") as f:
        f.write(report)
    print(report, end="")
    return plan


def render(plan: Plan, out: str, max_mib: float) -> str:
    total = sum(os.path.getsize(p) for p, _ in plan.fetched.values())
    lines = [f"GPU wheels for CPython {PYTHON} manylinux x86_64 in {out}: {len(plan.fetched)} wheels, "
             f"{total / 2**20:.2f} MiB (limit {max_mib:g} MiB)", "", "fetched:"]
    for _, (path, how) in sorted(plan.fetched.items()):
        lines.append(f"  {os.path.basename(path)}  {os.path.getsize(path) / 2**20:.2f} MiB  {how}")
    lines += ["", "left out:"] + [f"  {x}" for x in plan.left_out or ["(nothing)"]]
    lines += ["", "conflicts with the image's known versions:"] + [f"  {x}" for x in plan.conflicts or ["(none)"]]
    lines += ["", "trusted to the image (not fetched):"]
    for name, specs in sorted(plan.image.items()):
        known = IMAGE_VERSIONS.get(name)
        lines.append(f"  {name} {known or '(version not known here)'}: required {' and '.join(sorted(specs))}")
    lines += ["", "On the GPU machine, gpu_check's install stage installs each wheel whose distribution is missing "
              "there and its environment stage runs pip check.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "gpu_wheels"), help="folder for the wheels (default %(default)s)")
    p.add_argument("--max-mib", type=float, default=40.0, help="size limit of the folder (default %(default)s MiB)")
    a = p.parse_args(argv)
    plan = build(a.out, a.max_mib)
    return 0 if not any(r.startswith("segment-anything") for r in plan.left_out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
