"""What the bench scripts share: writing a report where ``--out`` says."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path | None, report: dict) -> None:
    """``report`` as indented JSON at ``path``, its folder made, and a line saying so; nothing
    when no path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
