"""The C fast path of ``Stream.push`` (``wavedge/runtime/_fast.c``), built where a C compiler and
Python's headers are present; ``optional`` makes a failed build a warning, and the package then
runs the same Python it is checked against (``wavedge.runtime.accel``). ``WAVEDGE_PURE_PYTHON=1``
builds without it: a pure-Python wheel that installs on any board (docs/boards.md). Everything
else about the package is in pyproject.toml."""

import os

from setuptools import Extension, setup

fast = Extension("wavedge.runtime._fast", ["wavedge/runtime/_fast.c"],
                 extra_compile_args=["-O2"], optional=True)
pure = os.environ.get("WAVEDGE_PURE_PYTHON", "") not in ("", "0")
setup(ext_modules=[] if pure else [fast])
