"""The C fast path of ``Stream.push`` (``wavedge/runtime/_fast.c``), built where a C compiler and
Python's headers are present; ``optional`` makes a failed build a warning, and the package then
runs the same Python it is checked against (``wavedge.runtime.accel``). Everything else about
the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wavedge.runtime._fast", ["wavedge/runtime/_fast.c"],
                             extra_compile_args=["-O2"], optional=True)])
