# SPDX-License-Identifier: Apache-2.0
"""ID card reader driver and device against the SAM simulator on a real pty."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import serial
from haltest import Recorder, wait_for

from hal.device import FAULT, OK
from hal.exc import DeviceTimeout
from hal.idcard import IdCardDevice, IdCardReader
from hal.protocols import sam
from hal.serial import open_port
from hal.sim import IdCardSim
from hal.sim.idcard import SAMPLE_KINDS, sample_card


@pytest.fixture
def port(idcard_sim: IdCardSim) -> Iterator[serial.SerialBase]:
    p = open_port(idcard_sim.url, baudrate=115200)
    yield p
    p.close()


@pytest.fixture
def reader(port: serial.SerialBase) -> IdCardReader:
    return IdCardReader(port, timeout=0.5)


def test_status_check_and_sam_id(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    reader.sam_status()
    reader.set_max_frame()
    assert reader.sam_id()
    assert idcard_sim.commands[:3] == [(0x11, 0xFF), (0x61, 0xFF), (0x12, 0xFF)]


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_full_read_of_each_card_type(reader: IdCardReader, idcard_sim: IdCardSim, kind: str) -> None:
    card = sample_card(kind)
    idcard_sim.place(card)
    got = reader.read()
    assert got == card and got is not None and got.card_type == kind and got.check_ok
    assert len(got.photo_wlt) == 1024


def test_read_with_fingerprint(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    idcard_sim.place(sample_card("resident", fingerprint=True))
    got = reader.read(fingerprint=True)
    assert got is not None and got.fingerprint is not None and len(got.fingerprint) == 1024
    idcard_sim.place(sample_card("resident"))
    got = reader.read(fingerprint=True)
    assert got is not None and got.fingerprint is None


def test_card_must_be_lifted_before_the_next_read(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    assert reader.read() is None                      # nothing placed
    idcard_sim.place(sample_card("resident"))
    assert reader.read() is not None
    assert reader.read() is None                      # still on the reader: find-card says 80
    idcard_sim.remove()
    idcard_sim.place(sample_card("resident"))
    assert reader.read() is not None


def test_bad_check_character_is_reported(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    idcard_sim.place(sample_card("resident", bad_check=True))
    got = reader.read()
    assert got is not None and got.check_ok is False


@pytest.mark.parametrize("sw3, error", sorted(sam.STATUS_ERRORS.items()))
def test_every_sw3_raises_its_typed_error(reader: IdCardReader, idcard_sim: IdCardSim, sw3: int,
                                          error: type[sam.SamStatusError]) -> None:
    idcard_sim.place(sample_card("resident"))
    reader.find_card()
    idcard_sim.fail_next(sw3)
    with pytest.raises(error):
        reader.select_card()


def test_garbage_and_split_frames(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    idcard_sim.split(5, delay=0.001)
    idcard_sim.place(sample_card("gat_permit"))
    assert reader.find_card()
    idcard_sim.split(None)
    # Garbage that arrives after the driver flushed its input, ahead of the reply.
    idcard_sim.place(sample_card("resident"))
    idcard_sim.corrupt_next = True
    with pytest.raises(sam.SamProtocolError, match="checksum"):
        reader.find_card()
    assert reader.find_card()                         # resynchronised, next exchange fine


def test_silence_is_a_timeout_never_a_hang(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    idcard_sim.silence(True)
    idcard_sim.inject(b"\xaa\xaa\x00noise")
    with pytest.raises(DeviceTimeout):
        reader.find_card()
    idcard_sim.silence(False)
    assert reader.find_card() is False


def test_device_emits_card_read_and_card_invalid(idcard_sim: IdCardSim, recorder: Recorder,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dev = IdCardDevice("idcard", idcard_sim.url, poll_interval_s=0.05)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="reader OK")
        assert dev.status().alarms == frozenset()
        card = sample_card("foreign_pr_2023")
        idcard_sim.place(card)
        ev = recorder.wait("card_read")[0]
        assert ev.device == "idcard" and ev.data["card"] == card and ev.data["check_ok"]
        idcard_sim.remove()
        idcard_sim.place(sample_card("resident", bad_check=True))
        recorder.wait("card_invalid")
        assert recorder.of("card_read")[-1].data["check_ok"] is False
        assert dev.info()["model"] == "GA 467 SAM"
        assert dev.selftest().passed
    finally:
        dev.stop()
    pii = [v for v in (card.name, card.name_en, card.id_number, card.address) if v]
    for text in (caplog.text, repr(recorder.events)):
        assert not [v for v in pii if v in text]


def test_sam_fault_raises_idcard_fault(idcard_sim: IdCardSim, recorder: Recorder) -> None:
    idcard_sim.sam_fault = True
    dev = IdCardDevice("idcard", idcard_sim.url, poll_interval_s=0.05)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == FAULT, what="SAM fault")
        assert dev.status().alarms == {"idcard_fault"} and dev.status().code == "hal.idcard.sam_selftest"
        result = dev.selftest()
        assert not result.passed and "sam_selftest" in result.reason
        idcard_sim.sam_fault = False
        wait_for(lambda: dev.status().state == OK, what="fault cleared")
        assert dev.status().alarms == frozenset()
    finally:
        dev.stop()


def test_card_error_event_on_failed_read(idcard_sim: IdCardSim, recorder: Recorder) -> None:
    dev = IdCardDevice("idcard", idcard_sim.url, poll_interval_s=0.05)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="reader OK")
        idcard_sim.place(sample_card("resident"))
        idcard_sim.fail_next(0x41)        # the find-card after placement fails
        ev = recorder.wait("card_error")[0]
        assert ev.data["code"] == "hal.idcard.read_failed"
        recorder.wait("card_read")        # and the next poll reads it
    finally:
        dev.stop()


def test_extra_address_empty(reader: IdCardReader, idcard_sim: IdCardSim) -> None:
    idcard_sim.place(sample_card("resident"))
    assert reader.read() is not None
    assert reader.read_extra_address() is None


def test_reader_going_quiet_is_a_fault_then_recovers(idcard_sim: IdCardSim, recorder: Recorder) -> None:
    dev = IdCardDevice("idcard", idcard_sim.url, poll_interval_s=0.05, reply_timeout_s=0.3)
    dev.start(recorder)
    try:
        wait_for(lambda: dev.status().state == OK, what="reader OK")
        idcard_sim.silence(True)
        wait_for(lambda: dev.status().alarms == {"idcard_offline"}, what="idcard_offline")
        assert dev.status().code == "hal.device.timeout"
        idcard_sim.silence(False)
        wait_for(lambda: dev.status().state == OK and not dev.status().alarms, what="recovered")
    finally:
        dev.stop()
