# SPDX-License-Identifier: Apache-2.0
"""The single backend selection point: ``real`` or ``sim``, from config.

    backend = select_backend("real")      # BackendUnavailable on a laptop
    factory = backend.pin_factory()
    camera = backend.camera(width=1280, height=960)

A configured real backend that cannot load is an error: a kiosk that thinks
it drives its door sensor while reading a simulated pin is worse than one
that refuses to start.
"""

from __future__ import annotations

from typing import Any

from hal.exc import BackendUnavailable
from hal.gpio import PinFactory

__all__ = ["Backend", "select_backend", "BACKENDS"]


class Backend:
    """What one backend provides: a pin factory and a camera.

    A backend **must** override ``pin_factory`` and ``camera``.
    """

    name = "abstract"
    simulated = False

    def pin_factory(self) -> PinFactory:
        raise NotImplementedError

    def camera(self, *, width: int, height: int) -> Any:
        raise NotImplementedError


class RealBackend(Backend):
    name = "real"

    def pin_factory(self) -> PinFactory:
        from hal.gpio_rpi import RpiPinFactory
        return RpiPinFactory()

    def camera(self, *, width: int, height: int) -> Any:
        from hal.camera_picamera2 import Picamera2Camera
        return Picamera2Camera(width=width, height=height)


class SimBackend(Backend):
    name = "sim"
    simulated = True

    def pin_factory(self) -> PinFactory:
        from hal.gpio_sim import SimPinFactory
        return SimPinFactory()

    def camera(self, *, width: int, height: int) -> Any:
        from hal.camera import SimCamera
        return SimCamera(width=width, height=height)


BACKENDS: dict[str, type[Backend]] = {"real": RealBackend, "sim": SimBackend}


def select_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise BackendUnavailable(f"unknown HAL backend {name!r}; known: {', '.join(BACKENDS)}") from None
