"""A description of the machine a benchmark ran on: CPU model and the flags that decide int8
and SIMD speed, cores, OS, and the versions of the libraries in play."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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
    return {"cpu": model, "arch": platform.machine(),
            "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "cores": os.cpu_count(), "usable_cpus": _usable_cpus(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": versions}


# Raspberry Pi firmware's `vcgencmd get_throttled` bits: now (low half), since boot (high half)
THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled",
                 3: "soft temperature limit"}
TOOL_TIMEOUT_S = 2.0


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def conditions(root: Path = Path("/")) -> dict:
    """What moves a board's latency between runs of the same code, read now: the board's
    model, the CPU frequency governor and clocks of the CPUs this process may use, the
    temperatures, a Raspberry Pi's throttling flags and a Jetson's power mode (where their
    tools are on PATH). ``root``: where /sys and /proc are (a test's copy)."""
    freq = [root / f"sys/devices/system/cpu/cpu{c}/cpufreq" for c in _usable_cpus()]
    out = {"board": _read(root / "proc/device-tree/model"),
           "governors": sorted({g for f in freq if (g := _read(f / "scaling_governor"))}),
           "mhz": [_khz_to_mhz(_read(f / "scaling_cur_freq")) for f in freq],
           "max_mhz": [_khz_to_mhz(_read(f / "cpuinfo_max_freq")) for f in freq],
           "temperatures_c": _temperatures(root / "sys/class/thermal")}
    throttled = _tool(["vcgencmd", "get_throttled"])  # "throttled=0x50000"
    if throttled and throttled.startswith("throttled="):
        bits = int(throttled.split("=", 1)[1], 16)
        out["throttled"] = {"now": _flags(bits), "since_boot": _flags(bits >> 16)}
    mode = _tool(["nvpmodel", "-q"])  # "NV Power Mode: MAXN"
    if mode and ":" in mode:
        out["power_mode"] = mode.splitlines()[0].split(":", 1)[1].strip()
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def _khz_to_mhz(text: str | None) -> float | None:
    try:
        return int(text) / 1000 if text else None
    except ValueError:
        return None


def _temperatures(thermal: Path) -> dict:
    out = {}
    for zone in sorted(thermal.glob("thermal_zone*")):
        kind, milli = _read(zone / "type"), _read(zone / "temp")
        try:
            out[kind or zone.name] = int(milli) / 1000
        except (TypeError, ValueError):  # a zone whose sensor is off reads EINVAL, or nothing
            continue
    return out


def _flags(bits: int) -> list[str]:
    return [name for bit, name in THROTTLE_BITS.items() if bits >> bit & 1]


def _tool(argv: list[str]) -> str | None:
    """The first lines of a board's own tool, where it is installed and answers in time."""
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def conditions_line(before: dict, after: dict) -> str:
    """One line for the bench's table: the board, governor, clocks and temperatures before
    the run -> after it, and the throttling flags after it."""
    parts = [before.get("board") or "board not named",
             f"governor {'/'.join(before['governors']) or 'not exposed'}"]
    clocks = [m for m in after["mhz"] if m is not None]
    top = [m for m in after["max_mhz"] if m is not None]
    if clocks:
        parts.append(f"clock {min(clocks):.0f}-{max(clocks):.0f} MHz after"
                     + (f" (max {max(top):.0f})" if top else ""))
    parts += [f"{zone} {t:.1f} -> {after['temperatures_c'].get(zone, float('nan')):.1f} C"
              for zone, t in before["temperatures_c"].items()]
    if "throttled" in after:
        t = after["throttled"]
        parts.append(f"throttled now: {', '.join(t['now']) or 'no'}, since boot: "
                     f"{', '.join(t['since_boot']) or 'no'}")
    if "power_mode" in after:
        parts.append(f"power mode {after['power_mode']}")
    if parts == ["board not named", "governor not exposed"]:
        return ("conditions: none exposed here (no board model, CPU governor, clocks or "
                "temperatures: a VM or a container?)")
    return "conditions: " + "; ".join(parts)


def condition_notes(before: dict, after: dict) -> list[str]:
    """What makes the numbers not the board's steady best, said as notes."""
    notes = []
    slow = [g for g in before["governors"] if g != "performance"]
    if slow:
        notes.append(f"CPU governor {'/'.join(slow)}: the clock follows the load, and the "
                     "latency with it; for steady numbers: echo performance | sudo tee "
                     "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    now = after.get("throttled", {}).get("now") or before.get("throttled", {}).get("now")
    new = set(after.get("throttled", {}).get("since_boot", ())) - \
        set(before.get("throttled", {}).get("since_boot", ()))
    if now or new:
        notes.append(f"the board was throttled during the run ({', '.join(now or sorted(new))}"
                     "): these numbers are not its best (check its power supply and cooling)")
    return notes
