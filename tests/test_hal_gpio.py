# SPDX-License-Identifier: Apache-2.0
"""GPIO through the simulated backend: debouncing, alarms, the light tower."""

from __future__ import annotations

import threading

import pytest
from kiosktest import wait_until

from hal.backend import select_backend
from hal.device import DeviceEvent
from hal.exc import BackendUnavailable, PinInUse
from hal.gpio import DebouncedInput, LightTower
from hal.gpio_sim import SimPin, SimPinFactory


def test_bouncing_contact_gives_one_event() -> None:
    factory = SimPinFactory()
    pin = factory.pin(17, "input")
    assert isinstance(pin, SimPin)
    events: list[DeviceEvent] = []
    door = DebouncedInput("door", pin, debounce_s=0.03, alarm="door_open")
    door.start(events.append)
    assert door.status().state == "ok" and not door.status().alarms
    pin.bounce(True, edges=9)
    wait_until(lambda: events, 2, message="the settled edge")
    threading.Event().wait(0.1)
    assert [e.data["active"] for e in events] == [True]
    assert door.status().alarms == {"door_open"}
    pin.bounce(False, edges=4)
    wait_until(lambda: len(events) == 2, 2, message="the release")
    assert events[-1].data["active"] is False and not door.status().alarms
    door.stop()


def test_glitch_shorter_than_debounce_is_ignored() -> None:
    pin = SimPinFactory().pin(27, "input")
    events: list[DeviceEvent] = []
    tamper = DebouncedInput("tamper", pin, debounce_s=0.05, alarm="tamper")
    tamper.start(events.append)
    pin.drive_high()   # type: ignore[attr-defined]
    pin.drive_low()    # type: ignore[attr-defined]
    threading.Event().wait(0.2)
    assert events == []


def test_active_low_input() -> None:
    factory = SimPinFactory(initial={22: True})
    pin = factory.pin(22, "input")
    sensor = DebouncedInput("door", pin, active_high=False, debounce_s=0, alarm="door_open")
    sensor.start(lambda e: None)
    assert not sensor.active
    pin.drive_low()    # type: ignore[attr-defined]
    assert sensor.active and sensor.status().alarms == {"door_open"}


def test_light_tower_follows_mode_and_selftest_restores_it() -> None:
    factory = SimPinFactory()
    red, amber, green = (factory.pin(n, "output") for n in (5, 6, 13))
    tower = LightTower(red=red, amber=amber, green=green)
    tower.start(lambda e: None)
    assert tower.lit() == {"red": False, "amber": False, "green": True}
    tower.show("maintenance")
    assert tower.lit() == {"red": False, "amber": True, "green": False}
    tower.show("out_of_service")
    assert tower.lit() == {"red": True, "amber": False, "green": False}
    assert tower.selftest().passed
    assert tower.lit() == {"red": True, "amber": False, "green": False}
    assert isinstance(green, SimPin) and [v for _t, v in green.states] == [False, True, False, True, False]


def test_two_devices_on_one_pin_are_refused() -> None:
    factory = SimPinFactory()
    factory.pin(5, "output")
    with pytest.raises(PinInUse):
        factory.pin(5, "input")


def test_real_backend_is_unavailable_here_never_sim() -> None:
    backend = select_backend("real")
    with pytest.raises(BackendUnavailable, match=r"RPi\.GPIO"):
        backend.pin_factory()
    with pytest.raises(BackendUnavailable):
        select_backend("bogus")


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_debounce_follows_an_injected_clock() -> None:
    """As the firmware's Debounced: the level counts only after debounce_s of quiet on the given clock."""
    clock = _Clock()
    pin = SimPinFactory().pin(17, "input")
    assert isinstance(pin, SimPin)
    events: list[DeviceEvent] = []
    door = DebouncedInput("door", pin, debounce_s=0.05, alarm="door_open", clock=clock)
    door.start(events.append)
    for _ in range(7):                     # chatter, 10 ms apart, ending high
        pin.drive_high()
        clock.now += 0.01
        pin.drive_low()
        clock.now += 0.01
    pin.drive_high()
    clock.now += 0.049
    assert door.settle() is False and events == []          # quiet for 49 ms: not yet
    clock.now += 0.001
    assert door.settle() is True
    assert [e.data["active"] for e in events] == [True] and door.status().alarms == {"door_open"}
    pin.drive_low()
    pin.drive_high()                       # a glitch that ends where it began
    clock.now += 0.05
    assert door.settle() is False and len(events) == 1
    door.stop()


def test_edges_start_no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 edges of a bouncing contact: at most the one shared settle thread starts, never one per edge."""
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)
    monkeypatch.setattr(threading.Thread, "start", counting_start)
    pin = SimPinFactory().pin(23, "input")
    assert isinstance(pin, SimPin)
    events: list[DeviceEvent] = []
    door = DebouncedInput("door", pin, debounce_s=0.03)
    door.start(events.append)
    for i in range(200):
        pin.drive_high() if i % 2 == 0 else pin.drive_low()
    pin.drive_high()
    wait_until(lambda: events, 2, message="the settled edge")
    assert [e.data["active"] for e in events] == [True]
    assert len(started) <= 1, started
    door.stop()
