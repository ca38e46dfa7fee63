# SPDX-License-Identifier: Apache-2.0
"""Firmware modules that are plain logic, run under CPython: inputs, outputs, updater."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware import update
from firmware.inputs import Debounced, Keypad
from firmware.outputs import OutputError, Relays, Ring
from hal.coproc import build_image


class FakePin:
    def __init__(self, level: int = 1) -> None:
        self.level = level

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self.level
        self.level = v
        return None


def test_debounce_needs_a_steady_reading() -> None:
    d = Debounced(False, 30)
    assert not d.update(True, 0) and not d.update(True, 20)
    assert d.update(True, 30) and d.value
    assert not d.update(False, 40) and not d.update(True, 50) and d.value   # a glitch is ignored


def test_keypad_matrix_reports_presses() -> None:
    rows = [FakePin(1) for _ in range(4)]
    cols = [FakePin(1) for _ in range(3)]

    class Col(FakePin):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.c = c

        def value(self, v: int | None = None) -> int | None:
            # key "8" (row 2, col 1) is held down
            return 0 if self.c == 1 and rows[2].level == 0 else 1

    pad = Keypad(rows, [Col(c) for c in range(3)])
    events = []
    for t in range(0, 100, 10):
        events += pad.poll(t)
    assert events == [("key", "8")]
    assert all(r.level == 1 for r in rows) and cols


def test_ring_and_relays_validate() -> None:
    class Px(list):  # type: ignore[type-arg]
        writes = 0

        def fill(self, rgb: tuple[int, int, int]) -> None:
            self[:] = [rgb] * len(self)

        def write(self) -> None:
            Px.writes += 1

    ring = Ring(Px([(0, 0, 0)] * 12))
    ring.set("solid", (1, 2, 3))
    ring.tick(0)
    ring.tick(10)
    assert Px.writes == 1                       # unchanged frame: no redraw
    with pytest.raises(OutputError):
        ring.set("disco", (1, 2, 3))
    with pytest.raises(OutputError):
        ring.set("solid", (1, 2, 300))
    relays = Relays([FakePin(0), FakePin(0), FakePin(0)])
    relays.set(2, True)
    assert relays.state() == [0, 0, 1]
    with pytest.raises(OutputError):
        relays.set(0, True)


@pytest.fixture
def flash(tmp_path: Path) -> Iterator[Path]:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_updater_installs_only_a_verified_complete_image(flash: Path) -> None:
    image = build_image()
    up = update.Updater(active="a")
    up.begin(len(image), hashlib.sha256(image).hexdigest(), "x", 30)
    with pytest.raises(update.UpdateError) as err:
        up.chunk(100, image[100:200])
    assert err.value.code == "offset"
    up.chunk(0, image[:1000])
    with pytest.raises(update.UpdateError) as err:
        up.commit()
    assert err.value.code == "incomplete" and not (flash / "boot.json").exists()
    up.begin(len(image), hashlib.sha256(b"other").hexdigest(), "x", 30)
    up.chunk(0, image)
    with pytest.raises(update.UpdateError) as err:
        up.commit()
    assert err.value.code == "digest_mismatch" and not (flash / "app_b").exists()
    up.begin(len(image), hashlib.sha256(image).hexdigest(), "x", 30)
    for off in range(0, len(image), 512):
        up.chunk(off, image[off:off + 512])
    assert up.commit() == "b"
    assert (flash / "app_b" / "lib" / "link.py").exists()
    assert update.read_record() == {"active": "a", "pending": "b", "tries": 0, "cause": None, "confirm_s": 30}
    assert update.confirm("b") and update.read_record()["active"] == "b"


def test_unpack_refuses_escaping_names(flash: Path) -> None:
    bad = b"KFW1" + (9).to_bytes(2, "big") + b"../evil1x" + (1).to_bytes(4, "big") + b"x"
    (flash / "fw.tmp").write_bytes(bad)
    with pytest.raises(update.UpdateError):
        update.unpack("fw.tmp", "app_b")
    assert not (flash / "evil1x").exists()
