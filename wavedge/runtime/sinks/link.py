"""``link:PORT[?baud=N&stream=S&vector=1]``: each result as a frame to a microcontroller over
the bridge (PORT: a device path or any pyserial URL). The handshake runs at open; a board with
another schema is refused. Class scores go as RESULT frames (``vector=1`` adds the logits);
every other output head as a kind-tagged PREDICTION frame (a Gaussian's means and variances,
the top tokens...). A head whose values cannot fit a frame is refused when the sink opens."""

from __future__ import annotations

import time

from wavedge.errors import InputError
from wavedge.runtime.urls import BAUD_RANGE


class LinkSink:
    def __init__(self, url, manifest) -> None:
        from wavedge.firmware_bridge.link import connect
        from wavedge.firmware_bridge.messages import MAX_VECTOR, PREDICTION_KINDS, Prediction, Result
        from wavedge.runtime.heads import ClassHead, heads_for

        url.check_params(("baud", "stream", "vector"))
        if not url.path:
            raise InputError(f"{url.text}: give the port, e.g. link:/dev/ttyACM0 or "
                             "link:usb:2341:0043")
        self.stream_id = url.get("stream", 0, int, (0, 255))  # one byte in RESULT
        self.vector = bool(url.get("vector", 0, int, (0, 1)))
        head = heads_for(manifest.signature)[0]
        self._classes = isinstance(head, ClassHead)
        floats = head.bridge_floats() if (self.vector or not self._classes) else 0
        if floats > MAX_VECTOR:
            raise InputError(f"{url.text}: output {head.name!r} ({head.spec.kind}) needs "
                             f"{floats} floats per frame, a bridge frame carries {MAX_VECTOR}"
                             + ("; drop vector=1" if self._classes else ""))
        if self._classes and head.spec.shape[-1] > 0xFFFF:
            raise InputError(f"{url.text}: {head.spec.shape[-1]} classes do not fit RESULT's "
                             "16-bit class id")
        self._head, self._result, self._prediction = head, Result, Prediction
        self._kind = PREDICTION_KINDS[head.spec.kind]
        self.link = connect(url.path, baud=url.get("baud", 115200, int, BAUD_RANGE))
        self._t0 = time.monotonic()

    def write(self, result, sample) -> None:
        ms = int((time.monotonic() - self._t0) * 1000)
        index, score, values = self._head.bridge(result.values)
        if self._classes:
            self.link.send(self._result(self.stream_id, result.step, ms, index, score,
                                        values if self.vector else ()))
        else:
            self.link.send(self._prediction(self.stream_id, result.step, ms, self._kind, index,
                                            score, values))

    def close(self) -> None:
        self.link.close()


def open(url, manifest) -> LinkSink:  # noqa: A001
    return LinkSink(url, manifest)
