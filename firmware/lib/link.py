# SPDX-License-Identifier: Apache-2.0
"""The co-processor link codec, shared verbatim by the firmware and the agent.

This file runs unchanged on MicroPython (>= 1.22) and CPython (>= 3.11): the
agent imports it as ``firmware.lib.link``, the firmware as ``link``. Keep it to
the common subset: no dataclasses, no typing at runtime, no f-strings with
format specs MicroPython lacks, no ``bytes.hex`` arguments.

Frame on the wire (one frame, before COBS)::

    type:u8 | seq:u8 | payload:0..MAX_PAYLOAD | crc:u16 big-endian

``crc`` is CRC-16/GENIBUS (poly 0x1021, init 0xFFFF, no reflection, final
xor 0xFFFF; check value of b"123456789" is 0xD64E) over type, seq and
payload. Not CCITT-FALSE: without a final xor, a good frame followed by one
stray byte 0x01 (a delimiter hit by noise) decodes as another good frame,
because COBS appends a zero and the CRC register of "message + its own
CRC high byte" equals "CRC low byte, 0x00". The final xor breaks that.
The frame is COBS-encoded and sent as ``00 <cobs> 00``: the leading delimiter
resynchronises after line noise, so garbage is counted as its own bad frame
instead of spoiling the next good one.

Every frame but ``ACK`` is a request that the peer acknowledges with an
``ACK`` carrying the same ``seq`` (payload empty, or ``{"e": code}`` when the
peer rejected it). The sender keeps one frame in flight (stop-and-wait) and
retransmits it until acknowledged or out of retries; the receiver drops a
repeat of the last ``seq`` it accepted (and re-sends its ack). ``HELLO``
resets the receiver's duplicate filter, since a rebooted peer starts its
sequence again.

    link = Link()
    seq = link.send(HEARTBEAT, dumps({}))
    uart.write(link.poll(ticks_ms()) or b"")
    for mtype, seq, payload in link.feed(uart.read() or b"", ticks_ms()):
        link.ack(seq)
"""

import json

try:
    from micropython import const
except ImportError:  # CPython: const() is a MicroPython compiler hint only
    def const(x):  # type: ignore
        return x

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython: same wrap-around arithmetic as MicroPython
    import time as _time

    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = 1 << 29

    def ticks_ms():  # type: ignore
        return int(_time.monotonic() * 1000) & (_TICKS_PERIOD - 1)  # type: ignore

    def ticks_add(a, b):  # type: ignore
        return (a + b) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):  # type: ignore
        d = (a - b) & (_TICKS_PERIOD - 1)
        return d - _TICKS_PERIOD if d >= _TICKS_HALF else d

PROTOCOL = const(1)

# Message types. Numbers are the wire contract: never renumber, only add.
HELLO = const(0x01)         # both ways: who I am (firmware: version, slot, reset cause)
HEARTBEAT = const(0x02)     # both ways: agent -> firmware feeds the host watchdog
INPUT = const(0x03)         # firmware -> agent: {"k": "key"|"joy"|"tamper", "v": ...}
ENV = const(0x04)           # firmware -> agent: {"t": deg C, "h": %RH}
SET_OUTPUT = const(0x05)    # agent -> firmware: {"led": {...}} or {"relay": n, "on": 0|1}
WDT_POLICY = const(0x06)    # agent -> firmware: host watchdog policy
FW_BEGIN = const(0x07)      # agent -> firmware: {"size", "sha256", "version"}
FW_CHUNK = const(0x08)      # agent -> firmware: offset:u32 big-endian | raw bytes
FW_COMMIT = const(0x09)     # agent -> firmware: verify, switch slot on trial, reboot
LOG = const(0x0A)           # firmware -> agent: {"l": level, "m": text}
ERROR = const(0x0B)         # either way: {"code": str, "m": text}
ACK = const(0x7F)           # either way: seq = acknowledged seq; payload "" or {"e": code}

NAMES = {HELLO: "hello", HEARTBEAT: "heartbeat", INPUT: "input", ENV: "env",
         SET_OUTPUT: "set_output", WDT_POLICY: "wdt_policy", FW_BEGIN: "fw_begin",
         FW_CHUNK: "fw_chunk", FW_COMMIT: "fw_commit", LOG: "log", ERROR: "error",
         ACK: "ack"}

MAX_PAYLOAD = const(1024)
_HEAD = const(2)
_MIN_FRAME = const(4)                       # type, seq, crc
_MAX_FRAME = const(1028)                    # _HEAD + MAX_PAYLOAD + 2
_MAX_ENCODED = const(1034)                  # _MAX_FRAME + _MAX_FRAME // 254 + 1 + slack


class LinkError(ValueError):
    """Root of the codec's errors; arbitrary input raises nothing else."""

    code = "link.error"


class FrameError(LinkError):
    """A frame failed COBS, length or CRC checks."""

    code = "link.frame"


class PayloadError(LinkError):
    """A payload is not what its message type carries."""

    code = "link.payload"


class LinkBusy(LinkError):
    """The send queue is full; the caller decides whether to drop or wait."""

    code = "link.busy"


def _make_table():
    # A 256-entry table: 512 bytes of RAM buys ~8x fewer bytecode ops per
    # byte, which matters at 115200 baud on the RP2040.
    try:
        from array import array
        table = array("H", [0] * 256)
    except ImportError:
        table = [0] * 256  # type: ignore
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table[i] = crc & 0xFFFF
    return table


_TABLE = _make_table()


def crc16(data):
    """CRC-16/GENIBUS of ``data``: ``crc16(b"123456789") == 0xD64E``."""
    table = _TABLE
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc ^ 0xFFFF


def cobs_encode(data):
    """COBS-encode ``data`` (no delimiters added): the result holds no 0x00."""
    out = bytearray(len(data) + len(data) // 254 + 1)
    code_at = 0
    code = 1
    o = 1
    for b in data:
        if b:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
        else:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode(data, out=None):
    """Decode one COBS block (no delimiters); raise FrameError if malformed.

    With ``out`` (a bytearray at least ``len(data)`` long) it decodes in place
    there and returns the length, so the firmware allocates nothing per frame.
    """
    n = len(data)
    ret_bytes = out is None
    if out is None:
        out = bytearray(n)
    i = 0
    o = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside COBS block")
        i += 1
        end = i + code - 1
        if end > n:
            raise FrameError("COBS block truncated")
        while i < end:
            b = data[i]
            if b == 0:
                raise FrameError("zero byte inside COBS block")
            out[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            out[o] = 0
            o += 1
    if ret_bytes:
        return bytes(out[:o])
    return o


def encode_frame(mtype, seq, payload=b""):
    """The bytes to write for one frame, delimiters included."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError("payload too long")
    if not 0 <= mtype <= 0xFF or not 0 <= seq <= 0xFF:
        raise PayloadError("type or seq out of range")
    raw = bytearray(_HEAD + len(payload) + 2)
    raw[0] = mtype
    raw[1] = seq
    raw[_HEAD:_HEAD + len(payload)] = payload
    crc = crc16(memoryview(raw)[:_HEAD + len(payload)])
    raw[-2] = crc >> 8
    raw[-1] = crc & 0xFF
    return b"\x00" + cobs_encode(raw) + b"\x00"


def _check(buf, n):
    if n < _MIN_FRAME:
        raise FrameError("frame too short")
    if n > _MAX_FRAME:
        raise FrameError("frame too long")
    crc = crc16(memoryview(buf)[:n - 2])
    if crc != (buf[n - 2] << 8) | buf[n - 1]:
        raise FrameError("CRC mismatch")
    return buf[0], buf[1], bytes(buf[_HEAD:n - 2])


def decode_frame(block):
    """Decode one COBS block (without delimiters) to ``(type, seq, payload)``."""
    if len(block) > _MAX_ENCODED:
        raise FrameError("frame too long")
    out = bytearray(len(block))
    n = cobs_decode(block, out)
    return _check(out, n)


class Decoder:
    """Splits a byte stream at 0x00 and yields good frames; counts bad ones.

    Never raises on input: a frame that fails COBS, length or CRC checks is
    dropped and counted in ``errors``.

        dec = Decoder()
        for mtype, seq, payload in dec.feed(uart.read()):
            ...
    """

    def __init__(self):
        self._buf = bytearray(_MAX_ENCODED)
        self._dec = bytearray(_MAX_ENCODED)
        self._len = 0
        self._drop = False
        self.frames = 0
        self.errors = 0          # every dropped frame, for whatever reason
        self.crc_errors = 0
        self.cobs_errors = 0
        self.oversize = 0

    def feed(self, data):
        """Consume ``data``; return the list of good ``(type, seq, payload)``."""
        out = []
        n = len(data)
        start = 0
        while start < n:
            i = data.find(b"\x00", start)
            end = n if i < 0 else i
            k = end - start
            if k and not self._drop:
                if self._len + k > _MAX_ENCODED:
                    # Too long to be a frame: a lost delimiter or noise.
                    self._drop = True
                else:
                    self._buf[self._len:self._len + k] = data[start:end]
                    self._len += k
            if i < 0:
                break
            start = i + 1
            if self._drop:
                self._drop = False
                self._len = 0
                self.oversize += 1
                self.errors += 1
            elif self._len:
                frame = self._one()
                self._len = 0
                if frame is not None:
                    out.append(frame)
        return out

    def _one(self):
        try:
            n = cobs_decode(memoryview(self._buf)[:self._len], self._dec)
        except FrameError:
            self.cobs_errors += 1
            self.errors += 1
            return None
        try:
            frame = _check(self._dec, n)
        except FrameError:
            self.crc_errors += 1
            self.errors += 1
            return None
        self.frames += 1
        return frame


def dumps(obj):
    """Compact, UTF-8 JSON bytes for a message payload."""
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(payload):
    """The JSON object in ``payload``; PayloadError if it is not one."""
    if not payload:
        return {}
    try:
        obj = json.loads(payload)
    except (ValueError, TypeError, RuntimeError, MemoryError):
        # ValueError covers UnicodeDecodeError; RuntimeError covers
        # CPython's RecursionError on deeply nested input.
        raise PayloadError("payload is not JSON") from None
    if not isinstance(obj, dict):
        raise PayloadError("payload is not a JSON object")
    return obj


def chunk_payload(offset, data):
    """``FW_CHUNK`` payload: offset (u32 big-endian) then the raw bytes."""
    return bytes((offset >> 24 & 0xFF, offset >> 16 & 0xFF, offset >> 8 & 0xFF, offset & 0xFF)) + data


def parse_chunk(payload):
    """``(offset, data)`` from a ``FW_CHUNK`` payload."""
    if len(payload) < 4:
        raise PayloadError("chunk too short")
    offset = (payload[0] << 24) | (payload[1] << 16) | (payload[2] << 8) | payload[3]
    return offset, payload[4:]


class Link:
    """One end of the link: sequencing, acknowledgement, retransmission.

    Pure state machine, no I/O and no clock of its own: the owner passes
    ``now`` (``ticks_ms()``), writes what ``poll`` returns and feeds what it
    reads. ``on_result(seq, mtype, ok, err)`` reports each request's fate.

        link = Link(retry_ms=250, retries=8)
        link.send(SET_OUTPUT, dumps({"relay": 1, "on": 1}))
        port.write(link.poll(ticks_ms()) or b"")
    """

    def __init__(self, queue=8, retry_ms=250, retries=8):
        self.decoder = Decoder()
        self.queue_max = queue
        self.retry_ms = retry_ms
        self.retries = retries
        self.on_result = None
        self._queue = []
        self._next_seq = 0
        self._inflight = None     # [seq, mtype, frame bytes]
        self._sent_at = 0
        self._tries = 0
        self._acks = []
        self._rx_last = -1
        self._last_ack = None     # (seq, ack frame) to repeat for a duplicate
        self.tx_frames = 0
        self.tx_retries = 0
        self.tx_failed = 0
        self.rx_frames = 0
        self.rx_duplicates = 0
        self.rx_stray_acks = 0

    def counters(self):
        """Link health as a dict (the agent publishes it; keys are stable)."""
        d = self.decoder
        return {"rx_frames": self.rx_frames, "rx_errors": d.errors, "rx_crc": d.crc_errors,
                "rx_cobs": d.cobs_errors, "rx_oversize": d.oversize,
                "rx_duplicates": self.rx_duplicates, "tx_frames": self.tx_frames,
                "tx_retries": self.tx_retries, "tx_failed": self.tx_failed}

    def pending(self):
        """Requests queued or in flight."""
        return len(self._queue) + (1 if self._inflight is not None else 0)

    def send(self, mtype, payload=b""):
        """Queue a request; return its seq. Raise LinkBusy when the queue is full."""
        if mtype == ACK:
            raise PayloadError("ACK is sent by the link itself")
        if len(self._queue) >= self.queue_max:
            raise LinkBusy("send queue full")
        seq = self._next_seq
        self._next_seq = (seq + 1) & 0xFF
        self._queue.append([seq, mtype, encode_frame(mtype, seq, payload)])
        return seq

    def reset_tx(self):
        """Drop everything queued or in flight (the port went away)."""
        dropped = self._queue
        if self._inflight is not None:
            dropped = [self._inflight] + dropped
        self._queue = []
        self._inflight = None
        self._acks = []
        for item in dropped:
            self._result(item[0], item[1], False, "reset")

    def _result(self, seq, mtype, ok, err):
        if self.on_result is not None:
            self.on_result(seq, mtype, ok, err)

    def ack(self, seq, err=None):
        """Acknowledge a delivered request; ``err`` (a code string) rejects it."""
        frame = encode_frame(ACK, seq, dumps({"e": err}) if err else b"")
        self._last_ack = (seq, frame)
        self._acks.append(frame)

    def feed(self, data, now=None):
        """Consume received bytes; return new requests as ``(type, seq, payload)``.

        The caller must ``ack`` each returned request after handling it.
        """
        out = []
        for mtype, seq, payload in self.decoder.feed(data):
            if mtype == ACK:
                fl = self._inflight
                err = None
                if payload:
                    try:
                        err = loads(payload).get("e")
                    except LinkError:
                        # CRC-16 lets ~1 in 65536 corrupted frames through;
                        # an ack that is not what an ack carries is one of
                        # them: drop it and let retransmission recover.
                        self.decoder.errors += 1
                        continue
                if fl is not None and fl[0] == seq:
                    self._inflight = None
                    self._result(seq, fl[1], err is None, err)
                else:
                    self.rx_stray_acks += 1
                continue
            if mtype != HELLO and seq == self._rx_last:
                # Our ack was lost and the peer retransmitted: repeat it.
                self.rx_duplicates += 1
                last = self._last_ack
                if last is not None and last[0] == seq:
                    self._acks.append(last[1])
                # else: the first copy is not acked yet; its ack will do.
                continue
            self._rx_last = seq
            self._last_ack = None
            self.rx_frames += 1
            out.append((mtype, seq, payload))
        return out

    def poll(self, now):
        """Bytes to write now (acks, a new request or a retransmission), or None."""
        parts = self._acks
        self._acks = []
        fl = self._inflight
        if fl is not None and ticks_diff(now, self._sent_at) >= self.retry_ms:
            if self._tries > self.retries:
                self._inflight = None
                self.tx_failed += 1
                self._result(fl[0], fl[1], False, "timeout")
                fl = None
            else:
                parts.append(fl[2])
                self._tries += 1
                self.tx_retries += 1
                self._sent_at = now
        if fl is None and self._queue:
            fl = self._inflight = self._queue.pop(0)
            parts.append(fl[2])
            self._tries = 1
            self._sent_at = now
            self.tx_frames += 1
        if not parts:
            return None
        return b"".join(parts)
