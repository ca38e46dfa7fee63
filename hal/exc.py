# SPDX-License-Identifier: Apache-2.0
"""The HAL's exception tree.

Every class carries a stable string ``code`` that health and alarm messages
publish, so a fleet dashboard can match on it across versions.

    try:
        reader.read_card()
    except DeviceTimeout as exc:
        log.warning("%s: %s", exc.code, exc)
"""

from __future__ import annotations


class HalError(Exception):
    """Root of every error the HAL raises."""

    code = "hal.error"


class BackendUnavailable(HalError, ImportError):
    """A configured backend (RPi.GPIO, picamera2, ...) cannot be loaded here."""

    code = "hal.backend.unavailable"


class PinError(HalError):
    """A GPIO pin could not be used as asked."""

    code = "hal.gpio.pin"


class PinInUse(PinError):
    """Two devices were configured on the same pin."""

    code = "hal.gpio.in_use"


class SerialDeviceError(HalError, OSError):
    """A serial port could not be opened, read or written."""

    code = "hal.serial.error"


class PortInUse(SerialDeviceError):
    """Two drivers were given the same port URL."""

    code = "hal.serial.in_use"


class DeviceClosed(HalError):
    """The device was used after ``close()``."""

    code = "hal.device.closed"


class DeviceTimeout(HalError, TimeoutError):
    """The device did not answer in time."""

    code = "hal.device.timeout"


class DeviceOffline(HalError):
    """The device is not connected (unplugged, port gone)."""

    code = "hal.device.offline"


class ProtocolError(HalError, ValueError):
    """Bytes from a device did not follow its wire protocol.

    Each codec in ``hal.protocols`` subclasses this, so a parser fed arbitrary
    bytes raises only its own class.
    """

    code = "hal.protocol.error"


class CameraError(HalError):
    """The camera could not capture a still."""

    code = "hal.camera.error"
