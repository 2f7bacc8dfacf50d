"""``wavedge --version``: the version, and what this install can do, for a bug report or a
fleet check. The extras and their packages are read from wavedge's own installed metadata
(pyproject.toml's optional-dependencies), not listed again here; nothing heavy is imported
(torch's version comes from its metadata)."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

import wavedge

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*['\"]([^'\"]+)")
NOT_LISTED = {"test"}  # the developers' extra: nothing a user runs needs it


def report() -> str:
    """The lines ``wavedge --version`` prints; the first is ``wavedge VERSION``."""
    from wavedge.runtime import accel
    from wavedge.runtime.backends import libraries, providers_here

    lines = [f"wavedge {wavedge.__version__}",
             f"  at {Path(wavedge.__file__).parent} (Python {platform.python_version()}, "
             f"{platform.system()} {platform.machine()})",
             f"  numpy {_version('numpy')}; C fast path "
             + ("built" if accel.available() else "not built (the Python path runs)")]
    for name, library in libraries().items():
        lines.append(f"  backend {name}: " + (f"{library} (providers: "
                     f"{', '.join(providers_here(name))})" if library else "not installed"))
    lines += [f"  extra {extra}: {state}" for extra, state in _extras().items()]
    lines.append(_bridge())
    return "\n".join(lines)


def _bridge() -> str:
    """The serial bridge's protocol and schema: a board whose firmware was built from another
    wavedge's wb_frame.h is refused by its schema hash, which this line names."""
    from wavedge.firmware_bridge.framing import PROTOCOL_VERSION
    from wavedge.firmware_bridge.messages import SCHEMA_HASH

    return f"  bridge: protocol {PROTOCOL_VERSION}, schema hash {SCHEMA_HASH:#010x}"


def _extras() -> dict[str, str]:
    try:
        requires = metadata.requires("wavedge") or []
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return {"(all)": "unknown: wavedge is not installed as a package here"}
    wanted: dict[str, list[str]] = {}
    for line in requires:
        if (m := _REQUIREMENT.match(line)) and m.group(2) not in NOT_LISTED:
            wanted.setdefault(m.group(2), []).append(m.group(1))
    out = {}
    for extra, packages in wanted.items():
        missing = [p for p in packages if _version(p) is None]
        out[extra] = ("installed" if not missing else
                      f"missing {', '.join(missing)} (pip install 'wavedge[{extra}]')")
    return out


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
