"""Pages whose code must run as written."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_own_model_page_runs_as_written(tmp_path):
    text = (ROOT / "docs" / "own-model.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    script = tmp_path / "own_model.py"
    script.write_text(block)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    label_line, configs = proc.stdout.strip().splitlines()[-2:]
    assert label_line.split()[0] in ("still", "shaken")
    assert "onnxruntime/fp32/step" in configs and "onnxruntime/int8/step" in configs
