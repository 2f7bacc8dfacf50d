"""The serial bridge to microcontrollers: the frame codec (``framing``, the pure-Python
reference) and its C99 twin for the MCU side (``c/wb_frame.h``, ``c/wb_frame.c``), the messages
(``messages``: RESULT for class scores, PREDICTION for any other output head), the host link over
pyserial with reconnection (``link``), a fault proxy (``proxy``), the stand-in microcontroller
(``standin``) and an Arduino sketch (docs/bridge.md).
"""

from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, PROTOCOL_VERSION, DecoderStats, Frame,
                                             FrameDecoder, FrameError, encode_frame)

__all__ = ["MAX_PAYLOAD", "PROTOCOL_VERSION", "DecoderStats", "Frame", "FrameDecoder",
           "FrameError", "encode_frame"]
