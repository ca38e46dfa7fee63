# SPDX-License-Identifier: Apache-2.0
"""The Raspberry Pi camera through picamera2 (libcamera).

Install picamera2 with apt (``python3-picamera2``) so it matches libcamera;
on a machine without it, constructing ``Picamera2Camera`` raises
BackendUnavailable (the real backend never falls back to the simulator).

    cam = Picamera2Camera(width=1280, height=960)
    still = cam.capture_still()       # JPEG bytes + the frame's metadata
    cam.close()

Colour order: picamera2's ``BGR888`` is **RGB byte order** in memory (what
JPEG encoders want), and ``RGB888`` is BGR order (what OpenCV wants). We
configure ``BGR888`` for the still; ``capture_bgr()`` swaps channels for
OpenCV.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from hal.camera import Camera, Still, jpeg_size
from hal.exc import BackendUnavailable, CameraError

__all__ = ["Picamera2Camera"]

try:
    from picamera2 import Picamera2
except ImportError as _exc:       # not a Pi, or picamera2 not installed
    Picamera2 = None
    _IMPORT_ERROR: Exception | None = _exc
else:
    _IMPORT_ERROR = None


class Picamera2Camera(Camera):
    """Still capture on the CSI camera.

    Args:
        width, height: still size.
        camera_num: which camera on boards with two.
        quality: JPEG quality 1..95.
    """

    model = "picamera2"

    def __init__(self, width: int = 1280, height: int = 960, *, camera_num: int = 0, quality: int = 90) -> None:
        if Picamera2 is None:
            raise BackendUnavailable(f"picamera2 is not available ({_IMPORT_ERROR}); "
                                     "install python3-picamera2 with apt")
        self.size = (width, height)
        self.quality = quality
        self._lock = threading.Lock()
        try:
            self._cam = Picamera2(camera_num)
            # BGR888 = RGB bytes in memory: the order the JPEG encoder expects.
            config = self._cam.create_still_configuration(main={"size": self.size, "format": "BGR888"},
                                                          buffer_count=1)
            self._cam.configure(config)
            self._cam.options["quality"] = quality
            self._cam.start()
            self._props: dict[str, Any] = dict(getattr(self._cam, "camera_properties", {}) or {})
        except Exception as exc:
            raise CameraError(f"picamera2 could not start: {exc}") from exc

    def capture_still(self) -> Still:
        buf = io.BytesIO()
        with self._lock:
            try:
                metadata = self._cam.capture_file(buf, format="jpeg")
            except Exception as exc:
                raise CameraError(f"capture failed: {exc}") from exc
        data = buf.getvalue()
        width, height = jpeg_size(data)
        return Still(data, width, height, dict(metadata or {}))

    def capture_bgr(self) -> Any:
        """The main stream as a numpy array in BGR order, for OpenCV."""
        with self._lock:
            rgb = self._cam.capture_array("main")
        return rgb[..., ::-1]

    def close(self) -> None:
        cam = getattr(self, "_cam", None)
        if cam is not None:
            self._cam = None
            try:
                cam.stop()
            finally:
                cam.close()

    def info(self) -> dict[str, Any]:
        return {"model": str(self._props.get("Model", self.model))}
