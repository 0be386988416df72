"""Build script: compiles csrc/ into ``samr1._C`` and ships ``kernels/`` as ``samr1.kernels``.

The C++ extension is optional at run time: when a compiler is missing the build still succeeds
(with a warning) and ``samr1`` falls back to its torch paths, saying so once (see samr1/ops/backends.py).
"""

import glob
import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pybind11 is a build requirement; without it we ship the pure-Python package
    Pybind11Extension = None


class OptionalBuildExt(build_ext):
    """Build the extension but never fail the install because of it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure degrades to torch fallbacks
            print(f"WARNING: samr1._C was not built ({exc}); samr1 will use its torch fallbacks.", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"WARNING: samr1._C was not built ({exc}); samr1 will use its torch fallbacks.", file=sys.stderr)


ext_modules = []
_sources = sorted(glob.glob("csrc/*.cpp"))
if _sources and Pybind11Extension is not None and os.environ.get("SAMR1_NO_EXT") != "1":
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    ext_modules.append(
        Pybind11Extension(
            "samr1._C",
            _sources,
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["-O3", *openmp],
            extra_link_args=openmp,
        )
    )

setup(
    packages=["samr1", *(f"samr1.{p}" for p in find_packages("samr1")), "samr1.kernels", "samr1.bench"],
    package_dir={"samr1": "samr1", "samr1.kernels": "kernels", "samr1.bench": "bench"},
    package_data={"samr1": ["assets/*", "view/static/*"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
