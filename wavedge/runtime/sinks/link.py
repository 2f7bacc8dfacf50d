"""``link:PORT[?baud=N&stream=S&vector=1]``: each result as a RESULT frame to a microcontroller
over the bridge (PORT: a device path or any pyserial URL). The handshake runs at open; a board
with another schema is refused. ``vector=1`` adds the logits to every RESULT."""

from __future__ import annotations

import time

from wavedge.errors import InputError


class LinkSink:
    def __init__(self, url, manifest) -> None:
        from wavedge.firmware_bridge.link import connect
        from wavedge.firmware_bridge.messages import Result

        url.check_params(("baud", "stream", "vector"))
        if not url.path:
            raise InputError(f"{url.text}: give the port, e.g. link:/dev/ttyACM0 or "
                             "link:usb:2341:0043")
        self._result = Result
        self.stream_id = url.get("stream", 0, int)
        self.vector = bool(url.get("vector", 0, int))
        self.link = connect(url.path, baud=url.get("baud", 115200, int))
        self._t0 = time.monotonic()

    def write(self, result, sample) -> None:
        ms = int((time.monotonic() - self._t0) * 1000)
        vector = tuple(float(v) for v in result.logits) if self.vector else ()
        self.link.send(self._result(self.stream_id, result.step, ms, result.class_id,
                                    result.score, vector))

    def close(self) -> None:
        self.link.close()


def open(url, manifest) -> LinkSink:  # noqa: A001
    return LinkSink(url, manifest)
