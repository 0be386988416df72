# samr1 — set-up is two commands: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.samr1-installed
SRC_DEPS := pyproject.toml setup.py constraints.txt $(wildcard csrc/*.cpp csrc/*.h)
PYTEST_ARGS ?=
DEMO_OUT ?= demo_out

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP)

$(STAMP): $(SRC_DEPS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip -c constraints.txt 2>/dev/null || true
	# torch first and alone: pinned so pip takes the local 2.14.1 wheels instead of downloading gigabytes
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt setuptools wheel pybind11
	$(PIP) install -q -c constraints.txt --no-build-isolation -e '.[dev]'
	$(PY) -c "import samr1._ext as e; print('samr1 C++ extension:', 'built' if e.available() else 'NOT built (torch fallback)')"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/samr1 demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/samr1 bench all --quick --out bench/out

lint: install
	$(PY) -m ruff check samr1 kernels tests bench

clean:
	rm -rf build *.egg-info samr1/_C*.so $(VENV)
