"""``link:PORT[?baud=N&limit=N&timeout_s=S]``: samples from a microcontroller's SENSOR frames
over the bridge (PORT: a device path or any pyserial URL). The handshake runs at open. Each
SENSOR message carries ``count`` samples of ``channels`` values; a message with the wrong
number of channels yields samples marked ``wrong_shape`` (the stream's policy decides). Lost
frames show in the link's statistics as sequence gaps. With ``timeout_s`` the source ends
when no SENSOR frame arrives for that long (default: wait forever; Ctrl-C stops)."""

from __future__ import annotations

import time

import numpy as np

from wavedge.errors import InputError
from wavedge.runtime import interrupts
from wavedge.runtime.sources import COUNT_RANGE, POLL_S, Sample
from wavedge.runtime.sources import port_reader as reader  # noqa: F401 (urls.reader_of)
from wavedge.runtime.urls import BAUD_RANGE


class LinkSource:
    def __init__(self, url, manifest) -> None:
        from wavedge.firmware_bridge.link import shared

        url.check_params(("baud", "limit", "timeout_s"))
        if not url.path:
            raise InputError(f"{url.text}: give the port, e.g. link:/dev/ttyACM0 or "
                             "link:usb:2341:0043")
        self.channels = manifest.input_size
        self.limit = url.get("limit", None, int, (1, COUNT_RANGE[1]))
        self.timeout_s = url.get("timeout_s", None, float, (0.001, 86400))
        # shared: the board may also be the run's link: sink, on this one port
        self.link = shared(url.path, baud=url.get("baud", 115200, int, BAUD_RANGE))
        self.frames = 0  # SENSOR frames taken

    def notes(self) -> list[str]:
        """What came over the line and what did not, for the run summary: a lossy cable or a
        run slower than the board shows here, not as a model that predicts worse."""
        st, dec = self.link.stats, self.link.decoder.stats
        damaged = dec.crc_errors + dec.cobs_errors + dec.length_errors + dec.version_errors \
            + dec.overflows
        return [f"link source: {self.frames} SENSOR frames taken; {st.seq_gaps} gap(s) in the "
                f"board's frame numbers (frames lost), {damaged} damaged frame(s) dropped, "
                f"{st.bad_messages} malformed message(s), {st.inbox_dropped} dropped unread "
                "(the run fell behind the board)"]

    def __iter__(self):
        from wavedge.firmware_bridge.messages import Sensor

        quiet = self.timeout_s or float("inf")
        count, end = 0, time.monotonic() + quiet
        while self.limit is None or count < self.limit:
            # in slices: a stop asked during the wait (``interrupts``) is acted on
            msg = self.link.receive(min(POLL_S, end - time.monotonic()), Sensor)
            if msg is None:
                interrupts.check()
                if time.monotonic() >= end:
                    return
                continue
            end = time.monotonic() + quiet
            self.frames += 1
            values = np.asarray(msg.values, np.float32)
            if msg.channels != self.channels:
                yield Sample(values, "wrong_shape", detail=f"a frame of {msg.channels} "
                             f"channel(s), the model takes {self.channels}")
                count += 1
                continue
            for row in values.reshape(-1, self.channels):
                if self.limit is not None and count >= self.limit:
                    return
                yield Sample(row)
                count += 1

    def close(self) -> None:
        from wavedge.firmware_bridge.link import release

        release(self.link)


def open(url, manifest) -> LinkSource:  # noqa: A001
    return LinkSource(url, manifest)
