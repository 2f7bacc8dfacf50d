"""The board side stays lean: ``wavedge.runtime`` and ``wavedge.firmware_bridge`` import nothing
from ``wavedge.models`` or ``wavedge.export`` (nor torch), and nothing outside ``models/``
branches on a family or architecture name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import BUNDLED_MODEL, ROOT

LEAN = ("runtime", "firmware_bridge")
FORBIDDEN = ("wavedge.models", "wavedge.export", "torch", "onnx")


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_runtime_and_bridge_source_imports_nothing_from_models_or_export():
    bad = []
    for part in LEAN:
        for path in (ROOT / "wavedge" / part).rglob("*.py"):
            bad += [f"{path.relative_to(ROOT)}: {m}" for m in _imports(path)
                    if m == "onnx" or any(m == f or m.startswith(f + ".")
                                          for f in FORBIDDEN if f != "onnx")]
    assert not bad, bad


def test_streaming_a_model_loads_no_torch_and_no_models_module():
    code = ("import sys, numpy as np\n"
            "from wavedge.runtime import load_model\n"
            "import wavedge.runtime.bench, wavedge.runtime.sinks.link, wavedge.firmware_bridge.link\n"
            f"s = load_model({str(BUNDLED_MODEL)!r}).stream()\n"
            "s.push(np.zeros(6, np.float32))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
            "m.startswith(('wavedge.models', 'wavedge.export'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_branch_on_a_family_name_outside_models():
    pattern = re.compile(r"""(arch|family)\s*(==|!=|in)\s*\(?['"]""")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "wavedge").rglob("*.py")
            if "models" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_training_and_export_without_torch_say_so_in_one_line(tmp_path):
    """A board's install has no torch: `train` and `export` there end in one line naming the
    extra, not a ModuleNotFoundError traceback (torch hidden here where it is installed)."""
    from conftest import assert_one_line_error, user_env

    for argv in (["train", "--task", "basic_motions", "--out", str(tmp_path / "m.pt")],
                 ["export", f"{BUNDLED_MODEL}.pt", "--out", str(tmp_path / "m")]):
        code = ("import sys; sys.modules['torch'] = None\n"
                f"from wavedge.cli import main; sys.exit(main({argv!r}))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=user_env(), timeout=120)
        assert_one_line_error(proc, f"{argv[0]} needs torch", "pip install 'wavedge[export]'")
    assert not list(tmp_path.iterdir())
