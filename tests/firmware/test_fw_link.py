# SPDX-License-Identifier: Apache-2.0
"""The link codec (firmware/lib/link.py) under CPython: exact bytes, properties, noise."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.lib import link as L


def test_crc_is_genibus() -> None:
    assert L.crc16(b"123456789") == 0xD64E
    assert L.crc16(b"") == 0x0000


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64))
def test_one_stray_byte_after_a_frame_never_decodes(mtype: int, seq: int, payload: bytes) -> None:
    # The trap of CRCs without a final xor: frame + 0x01 must not pass.
    frame = L.encode_frame(mtype, seq, payload)
    with pytest.raises(L.FrameError):
        L.decode_frame(frame[1:-1] + b"\x01")


def test_exact_frame_bytes() -> None:
    # type 0x02, seq 0x07, payload "{}", CRC-16/GENIBUS big-endian, COBS, 00 both ends
    frame = L.encode_frame(L.HEARTBEAT, 7, b"{}")
    crc = L.crc16(b"\x02\x07{}")
    assert frame == b"\x00\x07\x02\x07{}" + bytes([crc >> 8, crc & 0xFF]) + b"\x00"
    assert L.decode_frame(frame[1:-1]) == (L.HEARTBEAT, 7, b"{}")


def test_cobs_known_vectors() -> None:
    assert L.cobs_encode(b"\x00") == b"\x01\x01"
    assert L.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert L.cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255)) + b"\x01"


@given(st.binary(max_size=1100))
def test_cobs_round_trip(data: bytes) -> None:
    enc = L.cobs_encode(data)
    assert b"\x00" not in enc
    assert L.cobs_decode(enc) == data


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=L.MAX_PAYLOAD))
def test_frame_round_trip(mtype: int, seq: int, payload: bytes) -> None:
    frame = L.encode_frame(mtype, seq, payload)
    assert frame[0] == 0 and frame[-1] == 0 and b"\x00" not in frame[1:-1]
    assert L.decode_frame(frame[1:-1]) == (mtype, seq, payload)
    dec = L.Decoder()
    assert dec.feed(frame) == [(mtype, seq, payload)] and dec.errors == 0


@settings(max_examples=500)
@given(st.binary(max_size=2100))
def test_arbitrary_block_raises_only_frame_error(data: bytes) -> None:
    try:
        L.decode_frame(data)
    except L.FrameError as exc:
        assert exc.code == "link.frame"


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_decoder_never_raises_and_counts(chunks: list[bytes]) -> None:
    dec = L.Decoder()
    for chunk in chunks:
        dec.feed(chunk)
    # A good frame after any garbage is still decoded: the leading delimiter resyncs.
    assert dec.feed(L.encode_frame(L.LOG, 1, b"x")) == [(L.LOG, 1, b"x")]
    assert dec.errors == dec.crc_errors + dec.cobs_errors + dec.oversize


@given(st.binary(max_size=L.MAX_PAYLOAD))
def test_payload_parsing_raises_only_payload_error(data: bytes) -> None:
    try:
        assert isinstance(L.loads(data), dict)
    except L.PayloadError:
        pass
    try:
        L.parse_chunk(data)
    except L.PayloadError:
        pass


def test_oversize_is_dropped_and_counted() -> None:
    dec = L.Decoder()
    assert dec.feed(b"\x01" * 5000 + b"\x00" + L.encode_frame(L.LOG, 2, b"ok")) == [(L.LOG, 2, b"ok")]
    assert dec.oversize == 1 and dec.errors == 1


def test_duplicate_is_dropped_and_reacked() -> None:
    a, b = L.Link(), L.Link()
    results: list[tuple[int, bool, str | None]] = []
    a.on_result = lambda seq, mtype, ok, err: results.append((seq, ok, err))
    a.send(L.SET_OUTPUT, b'{"relay":1,"on":1}')
    frame = a.poll(0)
    assert frame is not None
    got = b.feed(frame + frame)     # a copy before the first is acked: no ack of its own
    assert [m[0] for m in got] == [L.SET_OUTPUT] and b.rx_duplicates == 1
    b.ack(got[0][1], "output")
    assert b.feed(frame) == []      # a copy after: the same verdict again
    acks = b.poll(0)
    assert acks is not None and acks.count(b"\x00") == 4
    a.feed(acks)
    assert results == [(0, False, "output")] and a.rx_stray_acks == 1


def test_retransmits_then_gives_up() -> None:
    a = L.Link(retry_ms=100, retries=3)
    results: list[tuple[bool, str | None]] = []
    a.on_result = lambda seq, mtype, ok, err: results.append((ok, err))
    a.send(L.HEARTBEAT, b"{}")
    sent = [t for t in range(0, 1000, 10) if a.poll(t)]
    assert sent == [0, 100, 200, 300] and results == [(False, "timeout")]
    assert a.tx_retries == 3 and a.tx_failed == 1


def test_busy_queue_raises_link_busy() -> None:
    a = L.Link(queue=2)
    a.send(L.LOG, b"")
    a.send(L.LOG, b"")
    with pytest.raises(L.LinkBusy):
        a.send(L.LOG, b"")


class NoisyWire:
    """A byte stream that replaces each byte with a random one at ``rate``; keeps both copies."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate = rng, rate
        self.sent = bytearray()
        self.recv = bytearray()
        self.frames: list[tuple[int, int]] = []   # byte ranges of frames in the stream

    def carry(self, data: bytes) -> bytes:
        i = 0
        while i < len(data):       # frames are 00 <no zeros> 00, back to back
            j = data.index(b"\x00", i + 1) + 1
            self.frames.append((len(self.sent) + i, len(self.sent) + j))
            i = j
        out = bytearray(data)
        for k in range(len(out)):
            if self.rng.random() < self.rate:
                out[k] = self.rng.randrange(256)
        self.sent += data
        self.recv += out
        return bytes(out)

    def corrupted(self) -> list[bool]:
        return [self.sent[s:e] != self.recv[s:e] for s, e in self.frames]

    def bad_segments(self) -> list[tuple[int, int]]:
        """Byte ranges between delimiters in what arrived that do not decode."""
        bad, start = [], 0
        for i, b in enumerate(bytes(self.recv) + b"\x00"):
            if b == 0:
                if i > start:
                    try:
                        L.decode_frame(bytes(self.recv[start:i]))
                    except L.FrameError:
                        bad.append((start, i))
                start = i + 1
        return bad


def test_ten_thousand_commands_through_one_percent_noise() -> None:
    rng = random.Random(20261123)
    agent, device = L.Link(retry_ms=100, retries=40), L.Link(retry_ms=100, retries=40)
    to_dev, to_agent = NoisyWire(rng, 0.01), NoisyWire(rng, 0.01)
    acked: list[int] = []
    failed: list[int] = []
    agent.on_result = lambda seq, mtype, ok, err: (acked if ok else failed).append(seq)
    delivered: list[bytes] = []
    acks_sent = 0
    total, queued, now = 10_000, 0, 0
    while len(acked) + len(failed) < total:
        while queued < total and agent.pending() < 4:
            agent.send(L.SET_OUTPUT, L.dumps({"relay": 1, "on": queued % 2, "n": queued}))
            queued += 1
        out = agent.poll(now)
        if out:
            for _mtype, seq, payload in device.feed(to_dev.carry(out), now):
                delivered.append(payload)
                device.ack(seq)
        before = device.rx_duplicates
        reply = device.poll(now)
        if reply:
            acks_sent += reply.count(b"\x00") // 2
            agent.feed(to_agent.carry(reply), now)
        assert device.rx_duplicates == before
        now += 20
    # No crash, nothing lost, nothing twice, in order.
    assert failed == [] and len(acked) == total
    assert [L.loads(p)["n"] for p in delivered] == list(range(total))
    # Every corrupted frame was dropped and counted: each one lies in a
    # stretch of bytes that failed to decode, and the decoder counted
    # exactly those stretches.
    corrupted = to_dev.corrupted()
    bad = to_dev.bad_segments()
    assert device.decoder.errors == len(bad)
    for (s, e), hit in zip(to_dev.frames, corrupted):
        if hit:
            assert any(bs < e and s < be for bs, be in bad)
    assert sum(corrupted) > 500  # the noise really bit
    # Every command frame that arrived uncorrupted was acknowledged.
    intact = len(corrupted) - sum(corrupted)
    assert device.rx_frames + device.rx_duplicates == intact
    assert acks_sent == intact


@settings(max_examples=300)
@given(st.lists(st.one_of(st.binary(max_size=300),
                          st.builds(L.encode_frame, st.integers(0, 255), st.integers(0, 255),
                                    st.binary(max_size=64))), max_size=12))
def test_link_endpoint_survives_any_stream(chunks: list[bytes]) -> None:
    link = L.Link()
    for i, chunk in enumerate(chunks):
        for _mtype, seq, _payload in link.feed(chunk, i):
            link.ack(seq)
        link.poll(i * 100)
    assert link.decoder.errors >= 0
