"""A serial port by one name, for the bridge's links and for a run's checks that a port has
one reader: a ``usb:VID:PID[:SERIAL]`` URL names the board wherever the OS puts it this time,
and a path is named with its links followed (``/dev/serial/by-id/...`` and the device it
points to are one port). pyserial's port list is imported for a ``usb:`` URL only."""

from __future__ import annotations

import os

from wavedge.errors import LinkError


def parse_usb(url: str) -> tuple[int, int, str | None] | None:
    """``usb:VID:PID[:SERIAL]`` (hex VID and PID, as lsusb prints them) -> (vid, pid, serial);
    None for any other URL."""
    if not url.startswith("usb:"):
        return None
    parts = url[4:].split(":")
    try:
        vid, pid = int(parts[0], 16), int(parts[1], 16)
    except (IndexError, ValueError):
        raise LinkError(f"{url}: expected usb:VID:PID[:SERIAL] with hex VID and PID, e.g. "
                        "usb:2341:0043") from None
    return vid, pid, (parts[2] if len(parts) > 2 and parts[2] else None)


def find_usb_port(vid: int, pid: int, serial_number: str | None, ports=None) -> str | None:
    """The device path of the USB serial port with this VID:PID (and serial number, when
    given), wherever the OS put it this time; None when none is plugged in."""
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    for p in ports:
        if p.vid == vid and p.pid == pid and (serial_number is None
                                              or p.serial_number == serial_number):
            return p.device
    return None


def port_name(url: str) -> str:
    """The one name of ``url``'s port: a ``usb:`` URL's device while the board is plugged in
    (the URL itself while it is not), a path with its links followed, and any other URL
    (``loop://``, ``socket://``, a source's ``stdin``) as it is."""
    usb = parse_usb(url)
    if usb is not None:
        url = find_usb_port(*usb) or url
    return os.path.realpath(url) if url.startswith("/") else url
