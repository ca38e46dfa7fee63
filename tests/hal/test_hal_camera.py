# SPDX-License-Identifier: Apache-2.0
"""Camera: the simulated backend, the device and its alarm, the picamera2 guard, face check."""

from __future__ import annotations

import pytest
from haltest import Recorder

from hal.camera import (
    Camera,
    CameraDevice,
    SimCamera,
    Still,
    face_available,
    face_present,
    jpeg_size,
)
from hal.device import FAULT, OK
from hal.exc import BackendUnavailable, CameraError


def test_sim_camera_returns_a_real_jpeg() -> None:
    still = SimCamera(width=1280, height=960).capture_still()
    assert still.jpeg[:2] == b"\xff\xd8" and still.jpeg[-2:] == b"\xff\xd9"
    assert (still.width, still.height) == jpeg_size(still.jpeg) == (320, 240)
    assert still.metadata["simulated"] and still.metadata["requested_size"] == [1280, 960]
    assert "\\xff" not in repr(still)


def test_camera_fault_alarm_raised_and_cleared(recorder: Recorder) -> None:
    cam = SimCamera()
    dev = CameraDevice("camera", cam)
    dev.start(recorder)
    assert dev.status().state == OK and dev.selftest().passed
    cam.fail(True)
    with pytest.raises(CameraError):
        dev.capture_still()
    assert dev.status().state == FAULT and dev.status().alarms == {"camera_fault"}
    result = dev.selftest()
    assert not result.passed and "camera" in result.reason
    cam.fail(False)
    assert isinstance(dev.capture_still(), Still)
    assert dev.status().alarms == frozenset()
    assert [e.data["state"] for e in recorder.of("status")] == ["ok", "fault", "ok"]
    dev.stop()


def test_not_a_jpeg_is_a_camera_fault() -> None:
    class Truncated(Camera):
        def capture_still(self) -> Still:
            return Still(b"\xff\xd8\xff\xd9", 1, 1)

    with pytest.raises(CameraError):
        SimCamera(jpeg=b"not a jpeg")
    dev = CameraDevice("camera", Truncated())
    dev.start(lambda _e: None)
    with pytest.raises(CameraError):
        dev.capture_still()
    assert dev.status().alarms == {"camera_fault"}


def test_picamera2_backend_is_unavailable_here_not_simulated() -> None:
    pytest.importorskip("hal.camera_picamera2")
    from hal.camera_picamera2 import Picamera2, Picamera2Camera
    if Picamera2 is not None:
        pytest.skip("picamera2 is installed on this machine")
    with pytest.raises(BackendUnavailable):
        Picamera2Camera(width=640, height=480)


def test_face_check_is_absent_cleanly_without_opencv() -> None:
    jpeg = SimCamera().capture_still().jpeg
    if face_available():
        assert face_present(jpeg) in (True, False)
        return
    assert face_present(jpeg) is None
    with pytest.raises(BackendUnavailable):
        face_present(jpeg, required=True)
