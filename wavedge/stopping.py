"""What a command leaves behind when SIGTERM stops it (``timeout``, a service manager, CI):
nothing it was half-way through writing.

The CLI's SIGTERM handler removes the paths registered here and ends the process with
``os._exit(143)``. It does not raise into the running code: an exception raised from the
handler unwinds through whatever torch or the backends are doing, and a test that stopped an
export that way saw the process die of SIGSEGV (exit -11) in one of about a dozen runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

_WRITING: set[Path] = set()
_HELD = {"depth": 0, "signal": None}  # a SIGTERM that came inside held(), acted on at its end


@contextmanager
def removed_if_stopped(path: Path):
    """While the block runs, ``path`` (a file or a folder being written) is removed if the
    process is stopped."""
    _WRITING.add(path)
    try:
        yield path
    finally:
        _WRITING.discard(path)


def part_of(path: Path) -> Path:
    """The file ``path`` is written to before it is renamed over it (``replaced_whole``)."""
    return path.with_name(f".{path.name}.part")


@contextmanager
def replaced_whole(path: Path):
    """Yields a file beside ``path`` to write; when the block ends without an error it is
    renamed over ``path``, with the permissions ``path`` had (an environment file an admin
    made private stays so). So a full disk or a stop mid-write leaves the file that was
    there, never one cut short (a manifest rewritten in place by ``upgrade`` was, on a full
    disk)."""
    part = part_of(path)
    with removed_if_stopped(part):
        try:
            yield part
            if path.exists():
                shutil.copymode(path, part)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)


def write_whole(path: Path, text: str) -> Path:
    """``path`` replaced by ``text`` whole, or left as it was (``replaced_whole``)."""
    with replaced_whole(path) as part:
        part.write_text(text, encoding="utf-8")
    return path


def write_figure(fig, path: Path, dpi: int) -> Path:
    """A matplotlib figure saved to ``path`` as PNG whole, or ``path`` left as it was; the
    figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with replaced_whole(path) as part:
            fig.savefig(part, dpi=dpi, format="png")  # the .part name says no format
    finally:
        plt.close(fig)
    return path


@contextmanager
def new_folder_removed_if_stopped(parent: Path, prefix: str):
    """A new folder ``parent/prefix<random>``, removed if the process is stopped while the
    block runs. Its name is registered before the folder is made: registered after
    ``tempfile.mkdtemp``, a SIGTERM in between left it behind (seen once in CI; a test sends
    the signal from inside ``os.mkdir``). Made as ``mkdir`` makes it, readable by others
    unless the umask says not, where mkdtemp's was private to the user."""
    while True:
        path = parent / f"{prefix}{os.urandom(4).hex()}"
        with removed_if_stopped(path):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            yield path
            return


def put_in_place(folder: Path, target: Path) -> None:
    """Rename ``folder`` to ``target``; a ``target`` already there is moved aside first and
    removed after. No moment leaves neither: SIGTERM waits for the two renames (``held``),
    and a power cut between them leaves both beside it, whole. Removing the old folder in
    place first, a stop inside the removal had left part of it and no new one."""
    old = target.with_name(f".{target.name}.old-{os.urandom(4).hex()}")
    with removed_if_stopped(old):
        with held():
            if target.exists():
                os.replace(target, old)
            os.replace(folder, target)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def held():
    """Steps that must not be cut in two (``put_in_place``'s two renames: stopped between
    them, no model folder would be in place): a SIGTERM that comes during the block is acted
    on when it ends."""
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        if not _HELD["depth"] and _HELD["signal"] is not None:
            stop(_HELD["signal"], None)


def stop(signum, frame) -> None:  # a signal handler
    """Remove what is half written, say so in one line, exit 143 (128 + SIGTERM)."""
    if _HELD["depth"]:
        _HELD["signal"] = signum
        return
    for path in list(_WRITING):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    print("wavedge: terminated", file=sys.stderr, flush=True)
    os._exit(143)
