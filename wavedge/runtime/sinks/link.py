"""``link:PORT[?baud=N&stream=S&vector=1&queue=N]``: each result as a frame to a microcontroller
over the bridge (PORT: a device path or any pyserial URL). The handshake runs at open; a board
with another schema is refused, at open and after every reconnect. Frames go through the link's
bounded send queue (``queue``, 256 frames, drop-oldest), written by its own thread: a hung
board never slows inference, and the summary counts what was not sent. Class scores go as
RESULT frames (``vector=1`` adds the logits); every other output head as a kind-tagged
PREDICTION frame (a Gaussian's means and variances, class scores with their predictive variance,
the top tokens...). A head whose values cannot fit a frame is refused when the sink opens. A run
of several sources sends source k as stream S + k."""

from __future__ import annotations

import time

from wavedge.errors import InputError, SinkError
from wavedge.runtime.sources import port_reader as reader  # noqa: F401 (urls.reader_of)
from wavedge.runtime.urls import BAUD_RANGE

CLOSE_FLUSH_S = 2.0  # at close, the queue gets this long to reach the board
STREAM_MAX = 255  # a frame's stream id is one byte


class LinkSink:
    def __init__(self, url, manifest) -> None:
        from wavedge.firmware_bridge.link import shared
        from wavedge.firmware_bridge.messages import MAX_VECTOR, PREDICTION_KINDS, Prediction, Result
        from wavedge.runtime.heads import ClassHead, heads_for

        url.check_params(("baud", "stream", "vector", "queue"))
        if not url.path:
            raise InputError(f"{url.text}: give the port, e.g. link:/dev/ttyACM0 or "
                             "link:usb:2341:0043")
        self.stream_id = url.get("stream", 0, int, (0, STREAM_MAX))
        self.where = url.text
        self.vector = bool(url.get("vector", 0, int, (0, 1)))
        head = heads_for(manifest.signature)[0]
        # class scores go as RESULT frames, unless they carry a variance (PREDICTION, kind 7)
        self._classes = isinstance(head, ClassHead) and head.bridge_kind == head.kind
        floats = head.bridge_floats() if (self.vector or not self._classes) else 0
        if floats > MAX_VECTOR:
            raise InputError(f"{url.text}: output {head.name!r} ({head.spec.kind}) needs "
                             f"{floats} floats per frame, a bridge frame carries {MAX_VECTOR}"
                             + ("; drop vector=1" if self._classes else ""))
        if self._classes and head.spec.shape[-1] > 0xFFFF:
            raise InputError(f"{url.text}: {head.spec.shape[-1]} classes do not fit RESULT's "
                             "16-bit class id")
        self._head, self._result, self._prediction = head, Result, Prediction
        self._kind = PREDICTION_KINDS[head.bridge_kind]
        # shared: the board may also be the run's link: source, on this one port
        self.link = shared(url.path, baud=url.get("baud", 115200, int, BAUD_RANGE),
                           send_queue=url.get("queue", 256, int, (1, 1 << 20)))
        self._t0 = time.monotonic()
        self.posted = 0

    def check_streams(self, count: int) -> None:
        """A run of ``count`` sources, refused before its first sample when the last source's
        stream id would not fit a frame's byte (``write`` refuses it too, for the API)."""
        last, fits = self.stream_id + count - 1, STREAM_MAX + 1 - count
        if last > STREAM_MAX:
            fix = f"give ?stream={fits} or lower" if fits >= 0 else \
                f"one link carries {STREAM_MAX + 1} streams at most"
            raise SinkError(f"{self.where}: {count} sources would reach stream {last}, past a "
                            f"frame's {STREAM_MAX}; {fix}")

    def write(self, result, sample) -> None:
        ms = int((time.monotonic() - self._t0) * 1000)
        index, score, values = self._head.bridge(result.values)
        # a run of several sources: stream ids from ?stream= up, one per source
        sid = self.stream_id + ((sample.stream or 0) if sample is not None else 0)
        if sid > STREAM_MAX:  # else the link's writer thread died on the frame, silently
            raise SinkError(f"{self.where}: source {sample.stream} would be stream {sid}, past "
                            f"a frame's {STREAM_MAX}; give a lower ?stream=")
        if self._classes:
            self.link.post(self._result(sid, result.step, ms, index, score,
                                        values if self.vector else ()))
        else:
            self.link.post(self._prediction(sid, result.step, ms, self._kind, index,
                                            score, values))
        self.posted += 1

    def close(self) -> None:
        from wavedge.firmware_bridge.link import release

        self.link.flush(CLOSE_FLUSH_S)
        self.unsent = self.link.queued
        release(self.link)

    def counters(self) -> dict:
        """What the link did so far (the status line, a ``stats`` command's answer)."""
        st = self.link.stats
        return {"posted": self.posted, "sent": st.frames_out, "queue_dropped": st.queue_dropped,
                "write_timeouts": st.write_timeouts, "dropped_while_down": st.dropped_while_down,
                "disconnects": st.disconnects}

    def notes(self) -> list[str]:
        """What the link did, for the run summary."""
        st = self.link.stats
        return [f"link: {self.posted} results posted, {st.frames_out} frames sent; not sent: "
                f"{st.queue_dropped} dropped from a full send queue, {st.write_timeouts} write "
                f"timeouts, {st.dropped_while_down} while the port was gone, "
                f"{getattr(self, 'unsent', 0)} still queued at close; {st.disconnects} "
                f"disconnects, {st.reconnects} reconnects, {st.refused_boards} boards refused "
                "(another schema)"]


def open(url, manifest) -> LinkSink:  # noqa: A001
    return LinkSink(url, manifest)
