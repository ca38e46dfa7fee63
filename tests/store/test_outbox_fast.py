# SPDX-License-Identifier: Apache-2.0
"""The outbox against a fake uplink: its rules in milliseconds, no broker.

``FakeUplink`` implements what ``Outbox`` documents it uses of
``agent.uplink.Uplink`` -- ``connected``, ``add_connect_listener``,
``add_disconnect_listener`` and ``publish(topic, payload, qos=, retain=,
on_done=)`` -- and lets the test play the broker: connect, drop the link,
answer each PUBLISH with a reason code. The Store is the real one, in tmp.
The same rules against a real Mosquitto are in test_outbox.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kiosktest import wait_until_async

import agent.store.outbox as outbox_module
from agent.errors import NotConnected, StoreFull
from agent.store.database import Store
from agent.store.outbox import Outbox

PREFIX = "kiosk/v1/f/k-1"


@dataclasses.dataclass
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    on_done: Callable[[int | BaseException], None]


class FakeUplink:
    """The uplink's documented surface, with the broker's answers in the test's hands.

    ``answer`` is the reason code given to each PUBLISH as it is sent (on the
    next loop turn, as the real uplink's network thread would); ``None``
    holds the answer until ``ack()`` or ``drop()``.
    """

    def __init__(self) -> None:
        self.connected = False
        self.answer: Callable[[Sent], int | None] = lambda sent: 0
        self.sent: list[Sent] = []
        self.unanswered: list[Sent] = []
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []

    def add_connect_listener(self, cb: Callable[[], None]) -> None:
        self._on_connect.append(cb)

    def add_disconnect_listener(self, cb: Callable[[], None]) -> None:
        self._on_disconnect.append(cb)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                on_done: Callable[[int | BaseException], None]) -> None:
        if not self.connected:
            on_done(NotConnected("not connected to the broker"))     # on the spot, as Uplink does
            return
        sent = Sent(topic, bytes(payload), qos, retain, on_done)
        self.sent.append(sent)
        code = self.answer(sent)
        if code is None:
            self.unanswered.append(sent)
        else:
            asyncio.get_running_loop().call_soon(on_done, code)

    def connect(self) -> None:
        self.connected = True
        for cb in self._on_connect:
            cb()

    def drop(self) -> None:
        """The link goes: every unanswered PUBLISH fails with NotConnected."""
        self.connected = False
        unanswered, self.unanswered = self.unanswered, []
        for sent in unanswered:
            sent.on_done(NotConnected("connection lost"))
        for cb in self._on_disconnect:
            cb()

    def ack(self, code: int = 0) -> None:
        unanswered, self.unanswered = self.unanswered, []
        for sent in unanswered:
            sent.on_done(code)

    def topics(self) -> list[str]:
        return [s.topic.removeprefix(PREFIX + "/") for s in self.sent]


class Rig:
    def __init__(self, tmp_path: Path, **outbox_kw: Any) -> None:
        self.store = Store.open(tmp_path / "state")
        self.uplink = FakeUplink()
        self.alarms: list[tuple[str, bool]] = []
        self.outbox = Outbox(self.store, self.uplink, on_alarm=lambda c, a, d: self.alarms.append((c, a)),
                             **outbox_kw)

    async def __aenter__(self) -> Rig:
        await self.outbox.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.outbox.stop()
        self.store.close()


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A refused class waits 50 ms rather than 5 s before it tries again (the rule, not the figure, is tested)."""
    monkeypatch.setattr(outbox_module, "RETRY_MIN_S", 0.05)
    yield


def test_classes_go_by_priority_and_in_order_within_a_class(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            for i in range(5):
                await rig.outbox.enqueue("evidence", f"{PREFIX}/evidence/{i}", b"e")
                await rig.outbox.enqueue("tx", f"{PREFIX}/tx/{i}", b"t")
                await rig.outbox.enqueue("result", f"{PREFIX}/cmd/{i}/result", b"r")
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b"old", retain=True)
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b"new", retain=True)
            assert rig.uplink.sent == [] and rig.outbox.pending_count() == 16
            rig.uplink.connect()
            assert await rig.outbox.wait_drained(10)
            assert rig.uplink.topics() == ([f"cmd/{i}/result" for i in range(5)] + [f"tx/{i}" for i in range(5)]
                                           + [f"evidence/{i}" for i in range(5)] + ["health"])
            health = rig.uplink.sent[-1]
            assert (health.payload, health.qos, health.retain) == (b"new", 0, True)     # the snapshot superseded
            assert {s.qos for s in rig.uplink.sent[:-1]} == {1}
            stats = rig.outbox.stats()
            assert stats["published"] == {"result": 5, "alarm": 0, "config": 0, "tx": 5, "evidence": 5, "health": 1}
            await wait_until_async(lambda: rig.store.reader().execute("SELECT count(*) FROM outbox").fetchone()[0]
                                   == 0, 10, message="the delivered rows deleted")
    asyncio.run(go())


def test_not_connected_is_retried_after_reconnect_with_the_same_bytes(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            rig.uplink.connect()
            rig.uplink.answer = lambda sent: None          # the broker never answers: the link is dying
            for i in range(5):
                await rig.outbox.enqueue("tx", f"{PREFIX}/tx", b"%d" % i)
            await wait_until_async(lambda: len(rig.uplink.sent) == 5, 10, message="five in flight")
            rig.uplink.drop()
            assert rig.outbox.pending_count() == 5
            await rig.outbox.enqueue("tx", f"{PREFIX}/tx", b"5")          # queued while offline
            first = [s.payload for s in rig.uplink.sent]
            rig.uplink.answer = lambda sent: 0
            rig.uplink.connect()
            assert await rig.outbox.wait_drained(10)
            again = [s.payload for s in rig.uplink.sent[5:]]
            assert first == [b"0", b"1", b"2", b"3", b"4"] and again == first + [b"5"]
    asyncio.run(go())


def test_a_refused_publish_stays_queued_pauses_its_class_and_goes_once_allowed(tmp_path: Path,
                                                                               fast_retry: None) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            refuse = {"on": True}
            rig.uplink.answer = lambda sent: 0x87 if refuse["on"] and "/tx" in sent.topic else 0
            for i in range(3):
                await rig.outbox.enqueue("tx", f"{PREFIX}/tx", b"%d" % i)
            await rig.outbox.enqueue("alarm", f"{PREFIX}/alarm/door", b"a")
            rig.uplink.connect()
            await wait_until_async(lambda: ("publish_refused", True) in rig.alarms, 10, message="publish_refused")
            await wait_until_async(lambda: rig.outbox.stats()["published"]["alarm"] == 1, 10,
                                   message="the other class still flowing")
            assert rig.outbox.stats()["refused"] == {"tx": "0x87"}
            assert rig.outbox.stats()["depth"]["tx"] == 3                  # nothing lost
            refuse["on"] = False
            assert await rig.outbox.wait_drained(10)
            tx = [s.payload for s in rig.uplink.sent if s.topic.endswith("/tx")]
            assert tx[-3:] == [b"0", b"1", b"2"]                           # resent from the refused one, in order
            assert rig.alarms[-1] == ("publish_refused", False) and rig.outbox.stats()["refused"] == {}
            assert rig.outbox.refusals >= 1
    asyncio.run(go())


def test_over_its_limits_the_outbox_evicts_and_refuses_droppable_but_keeps_durable(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, max_rows=10) as rig:
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b"h")
            assert rig.outbox.stats()["depth"]["health"] == 1
            for i in range(10):
                await rig.outbox.enqueue("tx", f"{PREFIX}/tx", b"%d" % i)
            await wait_until_async(lambda: rig.outbox.backlog, 10, message="backlog")
            assert ("outbox_backlog", True) in rig.alarms
            assert rig.outbox.stats()["depth"]["health"] == 0             # evicted
            with pytest.raises(StoreFull):
                await rig.outbox.enqueue("health", f"{PREFIX}/health", b"h")
            await rig.outbox.enqueue("evidence", f"{PREFIX}/evidence", b"e")   # durable: still taken
            assert rig.outbox.pending_count() == 11
            rig.uplink.connect()
            assert await rig.outbox.wait_drained(10)
            await wait_until_async(lambda: not rig.outbox.backlog, 10, message="the backlog cleared")
            assert rig.alarms[-1] == ("outbox_backlog", False)
            await rig.outbox.enqueue("health", f"{PREFIX}/health", b"h")     # accepted again
            assert await rig.outbox.wait_drained(10)
            assert [s.topic for s in rig.uplink.sent].count(f"{PREFIX}/health") == 1
    asyncio.run(go())
