"""Shared fixtures. Everything runs on the CPU with data shipped inside packages; no hardware."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "wavedge" / "bundled"
BUNDLED_MODEL = BUNDLED / "wave_basic_motions"
BUNDLED_CHECKPOINT = BUNDLED / "wave_basic_motions.pt"
BUNDLED_MPL = BUNDLED / "mpl_digit_rows"  # the spike-and-slab RNN (docs/paper-mpl.md)

# The torch-free tier (`make test-runtime`, a board's install) has no torch: what needs it skips
HAS_TORCH = importlib.util.find_spec("torch") is not None
NO_TORCH = "needs torch (the export extra), which is not installed here, as on a board"
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)


def skip_module_without_torch() -> None:
    """For test modules that are about training or export through and through."""
    if not HAS_TORCH:
        pytest.skip(NO_TORCH, allow_module_level=True)


# Every child process a test starts gets the environment a user's shell gives, not the test
# runner's: PYTHONUNBUFFERED (set by some CI runners) once hid a broken-pipe exit status.
for _key in [k for k in os.environ if k.startswith("PYTHON")]:
    del os.environ[_key]


def user_env() -> dict:
    """The environment a user's shell gives: this one without the PYTHON* settings a test
    runner or CI may have set (PYTHONUNBUFFERED hid a broken-pipe exit once)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def run_cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run the ``wavedge`` command in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "wavedge.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout_s, env=user_env())


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed command: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("wavedge: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@contextlib.contextmanager
def sigint_inside_a_lock_wait(caller: str):
    """SIGINT delivered once in the main thread inside a ``threading.Condition.wait`` called
    by a function named ``caller``, just after the wait let go of its lock and before its
    ``try`` (where a signal can land: CI met it once); yields a list that holds True once it
    was delivered."""
    import signal
    import threading

    wait, fired = threading.Condition.wait.__code__, []

    def at_line(frame, event, arg):
        if event == "line" and not fired and "saved_state" in frame.f_locals \
                and frame.f_back.f_code.co_name == caller:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
        return at_line

    sys.settrace(lambda frame, event, arg: at_line if frame.f_code is wait else None)
    try:
        yield fired
    finally:
        sys.settrace(None)


def diverge(stream) -> None:
    """NaN in a stream's live state, as a model that diverged leaves it. The ``state`` setter
    refuses a non-finite state, so a test of the guards writes it in place."""
    for buf in stream._step.state:
        buf[...] = float("nan")


@pytest.fixture(scope="session")
def basic_motions_meta():
    """The metadata a BasicMotions checkpoint carries (labels, channels, normalisation)."""
    from wavedge.models.data import basic_motions
    from wavedge.models.train import normalisation

    data = basic_motions()
    mean, std = normalisation(data.x_train)
    return {"task": "basic_motions", "dataset": data.description, "labels": list(data.labels),
            "channels": list(data.channels), "sample_rate_hz": data.sample_rate_hz,
            "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
            "metrics": {"test_accuracy": None}}


@pytest.fixture(scope="session")
def exported_bundled(tmp_path_factory) -> Path:
    """The bundled checkpoint exported afresh (the committed model dir is tested separately)."""
    from wavedge.export import export_model_dir
    from wavedge.models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("export") / "wave"
    export_model_dir(load_checkpoint(BUNDLED_CHECKPOINT), out)
    return out
