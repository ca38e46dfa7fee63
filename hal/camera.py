# SPDX-License-Identifier: Apache-2.0
"""Camera: the interface, the simulated camera, the supervised device, face check.

    cam = SimCamera(width=1280, height=960)        # or Picamera2Camera (hal.camera_picamera2)
    still = cam.capture_still()                    # Still(jpeg=b"\\xff\\xd8...", width, height, metadata)
    dev = CameraDevice("camera", cam); dev.start(emit)
    face_present(still.jpeg)                       # True / False, None without the ``face`` extra

A still is citizen data (a face): ``Still.__repr__`` never shows the bytes,
and the caller decides whether it is kept (DESIGN section 8).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from hal.device import (
    FAULT,
    OK,
    UNKNOWN,
    DeviceEvent,
    DeviceStatus,
    Emit,
    Peripheral,
    SelftestResult,
)
from hal.exc import BackendUnavailable, CameraError, HalError

__all__ = ["Camera", "CameraDevice", "SimCamera", "Still", "face_available", "face_present", "jpeg_size"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, repr=False)
class Still:
    """One JPEG still and what the camera said about it."""

    jpeg: bytes
    width: int
    height: int
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Still({self.width}x{self.height}, {len(self.jpeg)} B JPEG)"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker; CameraError if it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise CameraError("not a JPEG (no SOI marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise CameraError("corrupt JPEG marker stream")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        size = int.from_bytes(data[i + 2:i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(data):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + size
    raise CameraError("JPEG without a frame header")


class Camera:
    """What a camera backend offers. A backend **must** implement ``capture_still``."""

    model = "camera"

    def capture_still(self) -> Still:
        raise NotImplementedError

    def close(self) -> None:
        """Release the camera (idempotent)."""

    def info(self) -> dict[str, Any]:
        return {"model": self.model}


class SimCamera(Camera):
    """Returns a real JPEG shipped in ``hal/sim/data`` (no camera, no image library).

    ``fail(True)`` makes captures raise CameraError, for fault tests; ``control_actions()``
    offers it to ``kiosk-agent sim camera fail|recover``.
    """

    model = "simulated"

    def __init__(self, width: int = 1280, height: int = 960, *, jpeg: bytes | None = None) -> None:
        self.requested = (width, height)
        self._jpeg = jpeg if jpeg is not None else resources.files("hal.sim").joinpath(
            "data/sim-still.jpg").read_bytes()
        self.size = jpeg_size(self._jpeg)
        self.failing = False
        self.captures = 0

    def fail(self, on: bool = True) -> None:
        self.failing = on

    def control_actions(self) -> dict[str, Callable[[list[str]], dict[str, Any]]]:
        """``kiosk-agent sim camera fail|recover|status``: a device fault a test can cause mid-session.

        ``fail`` makes every capture raise CameraError (the session at its photo
        step ends failed, the ``camera_fault`` alarm is raised); ``recover`` undoes it.
        """
        def set_failing(on: bool) -> dict[str, Any]:
            self.fail(on)
            return self._summary()

        return {"fail": lambda _a: set_failing(True), "recover": lambda _a: set_failing(False),
                "status": lambda _a: self._summary()}

    def _summary(self) -> dict[str, Any]:
        return {"failing": self.failing, "captures": self.captures}

    def capture_still(self) -> Still:
        if self.failing:
            raise CameraError("simulated camera fault")
        self.captures += 1
        return Still(self._jpeg, *self.size, metadata={"simulated": True, "requested_size": list(self.requested),
                                                       "captured_at": time.time()})


class CameraDevice(Peripheral):
    """The camera as a peripheral: alarm ``camera_fault`` when a capture fails.

        dev = CameraDevice("camera", SimCamera())
        dev.start(emit); still = dev.capture_still()
    """

    kind = "camera"
    alarm = "camera_fault"

    def __init__(self, name: str = "camera", camera: Camera | None = None) -> None:
        self.name = name
        self.camera = camera if camera is not None else SimCamera()
        self._status = DeviceStatus(UNKNOWN)
        self._emit: Emit = lambda _e: None
        self._lock = threading.Lock()

    def start(self, emit: Emit) -> None:
        # No capture here: a still is taken only when a session asks for one.
        self._emit = emit
        self._set(OK)

    def stop(self) -> None:
        self.camera.close()

    def status(self) -> DeviceStatus:
        return self._status

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.camera.info()}

    def _set(self, state: str, exc: BaseException | None = None) -> None:
        new = DeviceStatus(state, frozenset({self.alarm}) if state == FAULT else frozenset(),
                           getattr(exc, "code", None) if exc else None, str(exc or "")[:200], self.camera.info())
        old, self._status = self._status, new
        if (old.state, old.alarms) != (new.state, new.alarms):
            self._emit(DeviceEvent(self.name, "status", new.as_dict()))

    def capture_still(self) -> Still:
        """One still; a failure asserts ``camera_fault`` (cleared by the next success)."""
        with self._lock:          # one capture at a time: the sensor is shared
            try:
                still = self.camera.capture_still()
                jpeg_size(still.jpeg)
            except HalError as exc:
                self._set(FAULT, exc)
                raise
            except Exception as exc:
                err = CameraError(f"{exc.__class__.__name__}: {exc}")
                self._set(FAULT, err)
                raise err from exc
        self._set(OK)
        return still

    def selftest(self) -> SelftestResult:
        try:
            still = self.capture_still()
        except HalError as exc:
            return SelftestResult(self.name, False, f"{exc.code}: {exc}")
        return SelftestResult(self.name, True, f"captured {still.width}x{still.height} JPEG",
                              {"bytes": len(still.jpeg)})


def face_available() -> bool:
    """True when OpenCV (the ``face`` extra) is installed."""
    return importlib.util.find_spec("cv2") is not None


def face_present(jpeg: bytes, *, required: bool = False) -> bool | None:
    """Whether a frontal face is in ``jpeg`` (OpenCV Haar cascade).

    Returns None when OpenCV is not installed (the ``face`` extra), or raises
    BackendUnavailable with ``required=True``. Haar finds a face, not a
    live person or an identity.
    """
    try:
        import cv2
        import numpy as np
    except ImportError:
        if required:
            raise BackendUnavailable("face detection needs the 'face' extra (opencv-python-headless)") from None
        return None
    grey = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise CameraError("not a decodable JPEG")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(grey, 1.1, 5)
    return len(faces) > 0
