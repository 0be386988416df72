# samr1 — set-up is two commands: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.samr1-installed
SRC_DEPS := pyproject.toml setup.py constraints.txt $(wildcard csrc/*.cpp csrc/*.h)
PYTEST_ARGS ?=
DEMO_OUT ?= demo_out
# pip extras: dev (tests, lint) + onnx (CPU ONNX Runtime) + sam2 (SAM 2 kinds). On a CUDA machine use
# EXTRAS=dev,gpu,sam2; never onnx and
# gpu together (onnxruntime and onnxruntime-gpu overwrite each other's files).
EXTRAS ?= dev,onnx,sam2
# sam2 is a source distribution; its optional CUDA extension is skipped (SAM 2 runs without it).
export SAM2_BUILD_CUDA ?= 0

.PHONY: install demo test test-fast bench lint clean gpu-wheels

install: $(STAMP)

$(STAMP): $(SRC_DEPS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip -c constraints.txt 2>/dev/null || true
	# torch first and alone: pinned so pip takes the local 2.14.1 wheels instead of downloading gigabytes
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt setuptools wheel pybind11
	$(PIP) install -q -c constraints.txt --no-build-isolation -e '.[$(EXTRAS)]'
	$(PY) -c "import sys; from samr1.sam.encoder import ort_distributions as d; f = [x for x in d() if x.split()[0] in ('onnxruntime', 'onnxruntime-gpu')]; sys.exit(len(f) > 1 and 'both ONNX Runtime flavours are installed (' + ', '.join(f) + '); they overwrite each other: pip uninstall -y onnxruntime onnxruntime-gpu, then make install again')"
	$(PY) -c "from samr1.ops import backends as b; ok, why = b.cpp_status(); print('samr1 C++ extension:', 'built' if ok else 'NOT built (torch fallback): ' + why)"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/samr1 demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/samr1 bench all --quick --out bench/out

lint: install
	$(PY) -m ruff check samr1 kernels tests bench

# Wheels the lent GPU machines' image lacks (CPython 3.12, manylinux x86_64), carried with the tree to
# bench/gpu_check.sh --wheels $(GPU_WHEELS) (docs/gpu.md). Needs a package index, and the venv: sam2 ships
# only a source distribution, whose build imports torch.
GPU_WHEELS ?= gpu_wheels
gpu-wheels: install
	$(PY) bench/gpu_wheels.py --out $(GPU_WHEELS) --max-mib 40

clean:
	rm -rf build *.egg-info samr1/_C*.so $(VENV)
