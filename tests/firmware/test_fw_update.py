# SPDX-License-Identifier: Apache-2.0
"""Firmware update over the link: success, interruption, rollback, signatures."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fwtest import Rig, wait_until

from hal.coproc import (
    CHUNK,
    FIRMWARE_DIR,
    RolledBack,
    SignatureInvalid,
    build_image,
    image_version,
    shipped_firmware,
    sign_image,
)
from hal.exc import HalError

OLD = json.loads((FIRMWARE_DIR / "manifest.json").read_text())["version"]


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    # A release signs with the offline firmware key; tests make their own.
    return Ed25519PrivateKey.generate()


def pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def variant(tmp: Path, version: str, patch: tuple[str, str] | None = None) -> bytes:
    """The shipped firmware with another version (and optionally a code change)."""
    src = tmp / f"fw-{version}"
    shutil.copytree(FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["version"] = version
    (src / "manifest.json").write_text(json.dumps(manifest))
    if patch is not None:
        text = (src / "app.py").read_text()
        assert patch[0] in text
        (src / "app.py").write_text(text.replace(patch[0], patch[1]))
    return build_image(src)


def test_update_succeeds_and_sticks(rig: Rig, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rig.boot()
    dev = rig.device(public_keys=[pub(key)])
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    image = variant(tmp_path, "1.0.1")
    progress: list[tuple[int, int]] = []
    assert dev.update_firmware(image, sign_image(image, key), lambda d, t: progress.append((d, t)),
                               confirm_s=20) == "1.0.1"
    assert progress[-1] == (len(image), len(image)) and len(progress) == -(-len(image) // CHUNK)
    assert rig.wait_event("hello", lambda d: d["version"] == "1.0.1").data["slot"] == "b"
    wait_until(lambda: rig.boot_record()["pending"] is None and rig.boot_record()["active"] == "b",
               message="new image confirmed")
    # A crash afterwards boots the new image again: it was confirmed.
    n = len(rig.of_kind("hello"))
    rig.runner.kill()
    again = rig.wait_event("hello", lambda d: len(rig.of_kind("hello")) > n and d["version"] == "1.0.1")
    assert again.data["slot"] == "b"
    assert dev.status().info["firmware"] == "1.0.1"


def test_only_verified_images_are_pushed(rig: Rig, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rig.boot()
    dev = rig.device(public_keys=[pub(key)])
    rig.wait_event("hello")
    image = variant(tmp_path, "1.0.2")
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureInvalid):
        dev.update_firmware(image, sign_image(image, other))
    with pytest.raises(SignatureInvalid):
        dev.update_firmware(image + b"x", sign_image(image, key))
    assert not (rig.flash / "fw.tmp").exists() and not (rig.flash / "app_b").exists()


class Interrupt(Exception):
    pass


def test_interrupted_update_leaves_the_old_version(rig: Rig, tmp_path: Path, key: Ed25519PrivateKey,
                                                  rng: random.Random) -> None:
    rig.boot()
    dev = rig.device(public_keys=[pub(key)])
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    image = variant(tmp_path, "1.1.0")
    chunks = -(-len(image) // CHUNK)
    stop_at = rng.randrange(1, chunks)       # never the last: commit must not happen

    # 1. The agent goes away at a random chunk.
    def cut(done: int, total: int) -> None:
        if done >= stop_at * CHUNK:
            raise Interrupt(f"agent stopped at chunk {stop_at}/{chunks}")

    with pytest.raises(Interrupt):
        dev.update_firmware(image, sign_image(image, key), cut)
    assert rig.boot_record()["pending"] is None
    # ... and the device loses power before anything else happens.
    n = len(rig.of_kind("hello"))
    rig.runner.kill()
    hello = rig.wait_event("hello", lambda d: len(rig.of_kind("hello")) > n)
    assert hello.data["version"] == OLD and hello.data["slot"] == "a", f"stopped at chunk {stop_at}"

    # 2. The device loses power at another random chunk.
    wait_until(lambda: dev.status().state == "ok", message="online again")
    kill_at = rng.randrange(1, chunks)

    def power_cut(done: int, total: int) -> None:
        if done >= kill_at * CHUNK and rig.runner.proc is not None and rig.runner.proc.poll() is None:
            rig.runner.kill()

    n = len(rig.of_kind("hello"))
    with pytest.raises(HalError):
        dev.update_firmware(image, sign_image(image, key), power_cut)
    hello = rig.wait_event("hello", lambda d: len(rig.of_kind("hello")) > n)
    assert hello.data["version"] == OLD and hello.data["slot"] == "a", f"power cut at chunk {kill_at}"
    assert rig.boot_record() == {**rig.boot_record(), "active": "a", "pending": None}


def test_new_image_that_never_says_hello_is_rolled_back(rig: Rig, tmp_path: Path,
                                                         key: Ed25519PrivateKey) -> None:
    rig.boot()
    dev = rig.device(public_keys=[pub(key)])
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    mute = variant(tmp_path, "9.9.9", ("    def hello(self):\n",
                                       "    def hello(self):\n        return  # this build is broken\n"))
    assert image_version(mute) == "9.9.9"
    with pytest.raises(RolledBack):
        dev.update_firmware(mute, sign_image(mute, key), confirm_s=5)
    hello = rig.of_kind("hello")[-1].data
    assert hello["version"] == OLD and hello["reset_cause"] == "rollback" and hello["slot"] == "a"
    assert rig.boot_record()["active"] == "a" and rig.boot_record()["pending"] is None
    # The trial did run (it booted slot b) before the loader gave up on it.
    assert len(rig.runner.boots) >= 3


def test_shipped_firmware_is_pushed_when_versions_differ(rig: Rig, tmp_path: Path,
                                                         key: Ed25519PrivateKey) -> None:
    # The release step: sign the image of the shipped files.
    sig = tmp_path / "image.sig"
    sig.write_bytes(sign_image(build_image(), key))
    shipped = shipped_firmware(sig)
    assert shipped is not None
    rig.boot(image=variant(tmp_path, "0.9.0"))       # a Pico flashed with an older release
    rig.device(public_keys=[pub(key)], firmware=shipped, confirm_s=20)
    assert rig.wait_event("hello").data["version"] == "0.9.0"
    hello = rig.wait_event("hello", lambda d: d["version"] == OLD, timeout=60).data
    assert hello["slot"] == "b"
    wait_until(lambda: rig.boot_record()["active"] == "b", message="confirmed")


def test_new_image_that_fails_to_load_falls_back_at_once(rig: Rig, tmp_path: Path,
                                                         key: Ed25519PrivateKey) -> None:
    rig.boot()
    dev = rig.device(public_keys=[pub(key)])
    rig.wait_event("hello")
    wait_until(lambda: dev.status().state == "ok", message="online")
    broken = variant(tmp_path, "9.9.8", ("import asyncio\n", "import asyncio\nraise ImportError('broken build')\n"))
    with pytest.raises(RolledBack):
        dev.update_firmware(broken, sign_image(broken, key), confirm_s=30)
    hello = rig.of_kind("hello")[-1].data
    assert hello["version"] == OLD and hello["reset_cause"] == "rollback" and hello["slot"] == "a"
    assert "broken build" in rig.runner.console()
    # The loader fell back in the same boot: one reset (the commit), not two.
    assert len(rig.runner.boots) == 2
