"""A description of the machine a benchmark ran on: CPU model and the flags that decide int8
and SIMD speed, cores, OS, and the versions of the libraries in play."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                     "neon", "asimd", "asimddp", "asimdhp", "sve", "i8mm")
PACKAGES = ("wavedge", "numpy", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert",
            "tflite-runtime", "pyserial", "torch")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def describe() -> dict:
    """CPU, flags of interest present, cores (and the ones this process may use), OS, versions."""
    model, flags = _cpuinfo()
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = list(range(os.cpu_count() or 1))
    return {"cpu": model, "arch": platform.machine(),
            "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "cores": os.cpu_count(), "usable_cpus": usable,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": versions}
