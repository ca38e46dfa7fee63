# SPDX-License-Identifier: Apache-2.0
"""The checks of :mod:`fleet.ledger.verify` for whole batches, in the worker's thread or in child processes.

    checker = ProcessChecker(processes=1)     # or InlineChecker()
    items = checker.check(messages, kiosks)   # [(topic, payload), ...] -> [TxRecord | EvidenceItem | Rejection]
    checker.close()

A record costs a worker about 85 us of checks (58 us of them libsodium's
signature check, the rest JSON and the canonical form) against about 30 us
for everything else it does (MQTT, COPY, PUBACK, acknowledgements). In one
process those share one GIL, and threads only queue behind it; a child
process gives the checks a core of their own. It is spawned (not forked:
the worker has threads), imports no database driver, gets the kiosk
registry when it changes (only what changed), answers each batch with
its items in order, and ends when the worker's end of its pipe closes
(the worker stopped or was killed). A child that dies or stops answering
is replaced; the batch in hand is checked in the worker meanwhile, so
nothing waits on it and nothing is checked less.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Protocol

from fleet.ledger.kioskkeys import KioskKeys, SodiumKey
from fleet.ledger.verify import EvidenceItem, Rejection, TxRecord, check_evidence, check_tx

__all__ = ["BatchChecker", "InlineChecker", "ProcessChecker", "check_all"]

log = logging.getLogger("fleet.ledger.checkproc")

Item = TxRecord | EvidenceItem | Rejection
Message = tuple[str, bytes]          # (topic, payload)
# A kiosk's registration as sent to a child: (fleet, ((key id, raw public key), ...)).
_Entry = tuple[str, tuple[tuple[str, bytes], ...]]

CHECK_TIMEOUT_S = 120.0     # a child silent this long on one batch is taken for hung and replaced
MIN_PART = 64               # a batch is shared between children in parts of at least this many messages


class BatchChecker(Protocol):
    def start(self) -> None: ...

    def check(self, messages: Sequence[Message], kiosks: Mapping[str, KioskKeys]) -> list[Item]: ...

    def close(self) -> None: ...


def check_all(messages: Sequence[Message], kiosks: Mapping[str, KioskKeys]) -> list[Item]:
    """Each message checked on its own, in order: ``evidence`` topics as evidence, the rest as records."""
    return [check_evidence(topic, payload, kiosks) if topic.endswith("/evidence") else check_tx(topic, payload, kiosks)
            for topic, payload in messages]


class InlineChecker:
    """The checks in the calling thread."""

    def start(self) -> None:
        pass

    def check(self, messages: Sequence[Message], kiosks: Mapping[str, KioskKeys]) -> list[Item]:
        return check_all(messages, kiosks)

    def close(self) -> None:
        pass


def _entries(kiosks: Mapping[str, KioskKeys]) -> dict[str, _Entry]:
    return {kiosk: (entry.fleet, tuple(sorted((kid, key.raw) for kid, key in entry.keys.items())))
            for kiosk, entry in kiosks.items()}


# A TxRecord travels back as a tuple of its fields without topic and payload (the worker has both): a
# third of what pickling the object costs, in the process every record waits on.
_Compact = tuple[str, str, str, int, str, str, str, str, int, str, bool, "dict[str, Any] | None"]


def _compact(item: Item) -> Item | _Compact:
    if type(item) is TxRecord:
        return (item.fleet, item.kiosk, item.epoch, item.seq, item.id, item.hash, item.prev, item.kid, item.ts_ms,
                item.kind, item.has_evidence, item.epoch_start)
    return item


def _expand(answer: list[Item | _Compact], part: Sequence[Message]) -> list[Item]:
    out: list[Item] = []
    for a, (topic, payload) in zip(answer, part, strict=True):
        if isinstance(a, tuple):
            fleet, kiosk, epoch, seq, rid, digest, prev, kid, ts_ms, kind, has_evidence, start = a
            out.append(TxRecord(topic, fleet, kiosk, epoch, seq, rid, digest, prev, kid, ts_ms, kind, has_evidence,
                                payload, start))
        else:
            out.append(a)
    return out


def _serve(conn: Connection) -> None:
    """A child's loop: ``("keys", changed, removed)`` updates its registry, ``("check", messages)`` is answered."""
    # The worker decides when to stop (it closes the pipe); a terminal's Ctrl-C or a stop signal to the
    # whole group must not take a batch's checks away first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kiosks: dict[str, KioskKeys] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request[0] == "keys":
            _kind, changed, removed = request
            for kiosk in removed:
                kiosks.pop(kiosk, None)
            for kiosk, (fleet, keys) in changed.items():
                kiosks[kiosk] = KioskKeys(kiosk, fleet, {kid: SodiumKey(raw) for kid, raw in keys})
        else:
            conn.send([_compact(item) for item in check_all(request[1], kiosks)])


class _Child:
    def __init__(self, ctx: SpawnContext) -> None:
        self.conn, child_end = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(target=_serve, args=(child_end,), name="ledger-check", daemon=True)
        self.proc.start()
        child_end.close()
        self.registry: dict[str, _Entry] = {}        # what the child holds
        self.seen: Mapping[str, KioskKeys] | None = None  # the mapping it was last brought up to date with

    def sync(self, kiosks: Mapping[str, KioskKeys]) -> None:
        if kiosks is self.seen:
            return
        now = _entries(kiosks)
        changed = {k: v for k, v in now.items() if self.registry.get(k) != v}
        removed = [k for k in self.registry if k not in now]
        if changed or removed:
            self.conn.send(("keys", changed, removed))
        self.registry, self.seen = now, kiosks

    def close(self) -> None:
        self.conn.close()
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)


class ProcessChecker:
    """The checks in ``processes`` spawned children; a batch of more than ``MIN_PART`` is shared between them."""

    def __init__(self, processes: int = 1) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._children: list[_Child | None] = [None] * max(1, processes)

    def start(self) -> None:
        """Spawn the children now (a second or so), not when the first batch is waiting."""
        for index in range(len(self._children)):
            self._child(index)

    def _child(self, index: int) -> _Child:
        child = self._children[index]
        if child is None:
            child = self._children[index] = _Child(self._ctx)
        return child

    def check(self, messages: Sequence[Message], kiosks: Mapping[str, KioskKeys]) -> list[Item]:
        if not messages:
            return []
        count = max(1, min(len(self._children), len(messages) // MIN_PART))
        size = -(-len(messages) // count)
        parts = [messages[i:i + size] for i in range(0, len(messages), size)]
        index = 0
        try:
            for index, part in enumerate(parts):
                child = self._child(index)
                child.sync(kiosks)
                child.conn.send(("check", list(part)))
            items: list[Item] = []
            for index, part in enumerate(parts):
                conn = self._child(index).conn
                if not conn.poll(CHECK_TIMEOUT_S):
                    raise TimeoutError(f"no answer in {CHECK_TIMEOUT_S:.0f} s")
                items += _expand(conn.recv(), part)
            return items
        except (OSError, EOFError, TimeoutError) as exc:
            log.warning("checking process %d lost (%s); this batch is checked in the worker, another process "
                        "starts for the next", index, exc or exc.__class__.__name__)
            self.close()        # every child: the others may hold an answer this batch will never read
            return check_all(messages, kiosks)

    def close(self) -> None:
        for i, child in enumerate(self._children):
            if child is not None:
                child.close()
                self._children[i] = None
