"""The package's face and its layering rules, checked on the source tree itself."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import samr1

PKG = pathlib.Path(samr1.__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(samr1._EXPORTS))
def test_top_level_exports_resolve_to_their_defining_module(name):
    obj = getattr(samr1, name)
    module = importlib.import_module(samr1._EXPORTS[name])
    assert obj is getattr(module, name)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_thing'"):
        samr1.not_a_thing  # noqa: B018


def test_import_samr1_does_not_import_torch():
    # `samr1 --help` and `samr1.__version__` must not pay for torch.
    code = "import sys, samr1; samr1.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                names.add(str(arg.values[0].value))  # f"samr1.bench.{name}" -> its constant prefix
    return names


def _library_files() -> list[pathlib.Path]:
    return [p for p in PKG.rglob("*.py") if p.relative_to(PKG).parts[0] not in ("cli", "bench")]


def test_library_never_imports_bench_or_cli():
    offenders = []
    for path in _library_files():
        for name in _imported_modules(path):
            if name.startswith(("samr1.bench", "samr1.cli", "bench.")) or name in ("bench", "samr1.bench"):
                offenders.append(f"{path.relative_to(PKG)} imports {name}")
    assert not offenders, "library code must not import the benchmarks or the CLI:\n" + "\n".join(offenders)


def test_import_walker_sees_a_bench_import(tmp_path):
    # The walker must be able to fail: a planted import of the benchmarks is found.
    bad = tmp_path / "bad.py"
    bad.write_text("from samr1.bench.harness import measure\nimport importlib\nimportlib.import_module(f'samr1.cli.{x}')\n")
    names = _imported_modules(bad)
    assert "samr1.bench.harness" in names and "samr1.cli." in names


def test_all_lists_exactly_the_lazy_exports():
    assert set(samr1.__all__) == {"__version__", *samr1._EXPORTS}
