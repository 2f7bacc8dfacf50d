"""The board side stays lean: ``wavedge.runtime`` and ``wavedge.firmware_bridge`` import nothing
from ``wavedge.models`` or ``wavedge.export`` (nor torch), and nothing outside ``models/``
branches on a family or architecture name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import BUNDLED_MODEL, ROOT, run_cli

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


def test_version_reports_the_backends_and_each_extra_without_importing_torch():
    """`wavedge --version` is what a bug report or a fleet check quotes: its first line is the
    version; it names each backend's library (or that it is missing) and, for every extra in
    pyproject.toml, whether its packages are here, all without importing torch."""
    import tomllib
    from importlib import metadata

    import wavedge
    from wavedge.runtime.backends import libraries, providers_here

    code = ("import sys; from wavedge.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, file=sys.stderr); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "False", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"wavedge {wavedge.__version__}"
    for name, library in libraries().items():
        assert (f"  backend {name}: {library} (providers: {', '.join(providers_here(name))})"
                if library else f"  backend {name}: not installed") in lines
    project = ROOT / "pyproject.toml"  # an install from a wheel (test-arm64) has none
    extras = tomllib.loads(project.read_text())["project"]["optional-dependencies"] \
        if project.is_file() else {}
    for extra, requirements in extras.items():
        line = next((ln for ln in lines if ln.startswith(f"  extra {extra}: ")), None)
        if extra == "test":
            assert line is None
            continue
        names = [re.match(r"[A-Za-z0-9._-]+", r).group() for r in requirements]
        missing = []
        for name in names:
            try:
                metadata.version(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
        assert line == (f"  extra {extra}: installed" if not missing else
                        f"  extra {extra}: missing {', '.join(missing)} "
                        f"(pip install 'wavedge[{extra}]')"), line
    from wavedge.firmware_bridge.messages import SCHEMA_HASH

    assert lines[-1] == f"  bridge: protocol 1, schema hash {SCHEMA_HASH:#010x}"
    short = run_cli("-V")
    assert short.returncode == 0 and short.stdout.splitlines()[0] == lines[0], short.stderr
