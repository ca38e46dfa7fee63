# SPDX-License-Identifier: Apache-2.0
"""The one place that opens serial ports.

Drivers receive the opened port; only this module calls
``serial.serial_for_url``, so a driver runs unchanged on ``/dev/ttyUSB0``,
``/dev/kiosk/printer``, a simulator's pty, ``socket://host:7000`` or
``loop://``.

    port = open_port("/dev/kiosk/idcard", baudrate=115200, timeout=0.2)
    reader = IdCardReader(port)
"""

from __future__ import annotations

from typing import Any

import serial

from hal.exc import SerialDeviceError

__all__ = ["open_port", "wake_reader"]


def open_port(url: str, *, baudrate: int = 115200, timeout: float | None = 0.2,
              write_timeout: float | None = 2.0, **settings: Any) -> serial.Serial:
    """Open ``url`` with pyserial and return the port, or raise SerialDeviceError."""
    try:
        port = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, timeout=timeout,
                                     write_timeout=write_timeout, **settings)
        # ptys and USB adapters keep stale bytes across reopen; exclusive
        # access also stops a second agent from sharing the device.
        if hasattr(port, "exclusive") and not url.startswith(("loop://", "socket://", "spy://", "rfc2217://")):
            port.exclusive = True
        port.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialDeviceError(f"cannot open {url}: {exc}") from exc
    try:
        port.reset_input_buffer()
    except (serial.SerialException, OSError, AttributeError):
        pass
    return port


def wake_reader(port: object) -> None:
    """Make a blocked ``port.read()`` in another thread return now.

    Safe to call while that thread closes the port: pyserial's
    ``cancel_read`` checks ``is_open`` and then writes to a pipe the closing
    thread may already have closed, so EBADF here only means the reader is
    gone already, which is what the caller wanted.
    """
    cancel = getattr(port, "cancel_read", None)
    if cancel is None:
        return
    try:
        cancel()
    except (serial.SerialException, OSError, TypeError):
        pass
