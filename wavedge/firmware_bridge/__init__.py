"""The serial bridge to microcontrollers. So far: the frame codec (``framing``, the pure-Python
reference) and its C99 twin for the MCU side (``c/wb_frame.h``, ``c/wb_frame.c``). Messages,
the host link over pyserial and the stand-in microcontroller are still to come (docs/bridge.md).
"""

from wavedge.firmware_bridge.framing import (MAX_PAYLOAD, PROTOCOL_VERSION, DecoderStats, Frame,
                                             FrameDecoder, FrameError, encode_frame)

__all__ = ["MAX_PAYLOAD", "PROTOCOL_VERSION", "DecoderStats", "Frame", "FrameDecoder",
           "FrameError", "encode_frame"]
