"""A stop asked for by SIGINT or SIGTERM while the run waits inside a lock's wait.

A run stops at a signal by raising KeyboardInterrupt from its handler while the main thread
waits for a sample (``loop._Stopper``). Raised inside ``threading.Condition.wait`` (which
``queue.Queue.get`` is built on), it can land between the wait's release of its lock and its
``try``, and the ``with`` around the wait then fails to release the lock: the run ended in
"RuntimeError: cannot release un-acquired lock" instead of its summary (CI, once: Ctrl-C to a
run of two sources). So the handler does not raise inside the threading or
queue modules' code; it leaves the stop ``asked`` instead, and each of our waits on a lock
(a tick's, a network source's inbox, a link's) waits at most ``POLL_S`` at a time and calls
``check()`` between, which raises from plain code.
"""

from __future__ import annotations

import queue
import threading

POLL_S = 0.25  # how often a waiting source or tick looks at a stop (and a source at its idle clock)
_LOCK_CODE = frozenset({threading.__file__, queue.__file__})
asked: str | None = None  # the signal's name, until the run that installed the handler ends


def in_lock_code(frame) -> bool:
    """Whether ``frame`` (a signal handler's) or a frame that called it runs the threading or
    queue modules' code, where an exception raised now can leave a lock half released."""
    while frame is not None:
        if frame.f_code.co_filename in _LOCK_CODE:
            return True
        frame = frame.f_back
    return False


def check() -> None:
    """Raise KeyboardInterrupt if a signal asked for a stop during a lock's wait, in the main
    thread, which runs the loop and says the summary. The reader threads of several sources
    poll the same waits (a network source's inbox); raised there, it ended each with a
    traceback on stderr while the run ended, and the interpreter, finalizing, aborted on
    stderr's lock (SIGABRT, exit -6: CI, once, a SIGTERM to a run of two MQTT sources). A
    reader ends at the fan-in's stop instead."""
    if asked is not None and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt
