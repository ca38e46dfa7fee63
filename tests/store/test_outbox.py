# SPDX-License-Identifier: Apache-2.0
"""Outbox against a real Mosquitto through the real uplink: classes, refusals, limits, acks."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kiosktest import wait_until_async
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from storekit import DurableSubscriber, mqtt_config, start_broker

from agent.errors import StoreFull
from agent.sim.devbroker import DevBroker
from agent.store.database import Store
from agent.store.journal import Journal, verify_chain
from agent.store.outbox import Outbox, OutboxError
from agent.uplink.connection import Uplink

PREFIX = "kiosk/v1/f/k-1"




class Rig:
    def __init__(self, tmp_path: Path, port: int, **outbox_kw: Any) -> None:
        self.store = Store.open(tmp_path / "state")
        self.key = Ed25519PrivateKey.generate()
        self.journal = Journal(self.store, self.key, "k-1", fleet="f")
        self.uplink = Uplink(mqtt_config(port))
        self.alarms: list[tuple[str, bool]] = []
        self.outbox = Outbox(self.store, self.uplink, on_alarm=lambda c, a, d: self.alarms.append((c, a)),
                             **outbox_kw)

    async def __aenter__(self) -> Rig:
        await self.outbox.start()
        await self.uplink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.outbox.stop()
        await self.uplink.stop()
        self.store.close()


def test_classes_in_order_and_stats(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    sub = DurableSubscriber(broker.port, f"{PREFIX}/#")

    async def go() -> None:
        async with Rig(tmp_path, broker.port) as rig:
            for i in range(30):
                await rig.outbox.enqueue("result", f"{PREFIX}/cmd/ping/result", b'{"i":%d}' % i)
            recs = [await rig.journal.record({"n": i}) for i in range(30)]
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b'{"h":1}', retain=True)
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b'{"h":2}', retain=True)
            with pytest.raises(OutboxError):
                rig.outbox.enqueue_nowait("bogus", f"{PREFIX}/x", b"{}")
            assert await rig.outbox.wait_drained(30)
            await wait_until_async(lambda: len(sub.payloads("/tx")) >= 30 and len(sub.payloads("/result")) >= 30, 30,
                         message="everything at the subscriber")
            assert [json.loads(p)["i"] for p in sub.payloads("/result")][:30] == list(range(30))
            assert sub.payloads("/tx")[:30] == [r.payload for r in recs]
            stats = rig.outbox.stats()
            assert stats["depth"]["tx"] == 0 and stats["published"]["tx"] == 30
            # Delivery marks are lazy (no fsync of their own): within ~0.2 s.
            await wait_until_async(lambda: rig.journal.stats()["unacked"] == 30, 10,
                                   message="30 published, unacknowledged")
            await wait_until_async(lambda: sub.payloads("/health"), 10, message="health")
            assert sub.payloads("/health")[-1] == b'{"h":2}'
    try:
        asyncio.run(go())
    finally:
        sub.close()
        broker.stop()


def test_tx_ack_marks_records_and_tells_listeners(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")

    async def go() -> None:
        async with Rig(tmp_path, broker.port) as rig:
            heard: list[list[str]] = []
            rig.journal.add_ack_listener(heard.append)
            rig.uplink.subscribe(f"{PREFIX}/tx/ack", rig.journal.on_tx_ack)
            recs = [await rig.journal.record({"n": i}) for i in range(5)]
            assert await rig.outbox.wait_drained(30)
            await wait_until_async(lambda: rig.journal.stats()["unacked"] == 5, 10, message="published")
            backoffice = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
            backoffice.connect("127.0.0.1", broker.port)
            backoffice.loop_start()
            ids = [r.id for r in recs[:3]]
            backoffice.publish(f"{PREFIX}/tx/ack", json.dumps({"v": 1, "ts": 1, "ids": ids}).encode(), qos=1)
            backoffice.publish(f"{PREFIX}/tx/ack", b"not json", qos=1)
            await wait_until_async(lambda: rig.journal.stats()["unacked"] == 2, 15, message="the ack to be marked")
            assert heard == [ids]
            backoffice.disconnect()
            backoffice.loop_stop()
    try:
        asyncio.run(go())
    finally:
        broker.stop()


def test_prune_drops_only_old_acknowledged_records_and_the_chain_goes_on(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    day_ms = 86_400_000

    async def go() -> None:
        rig = Rig(tmp_path, broker.port)
        await rig.outbox.start()                # not connected yet: everything stays queued
        try:
            recs = [await rig.journal.record({"n": i}) for i in range(30)]
            # Acknowledged before it was published (a confused back office):
            # rows the outbox still holds must stay.
            await rig.journal.mark_acked([r.id for r in recs[:5]])
            assert await rig.journal.prune(90, now_ms=recs[-1].ts + 91 * day_ms) == 0
            await rig.uplink.start()
            assert await rig.outbox.wait_drained(30)
            await wait_until_async(lambda: rig.journal.stats()["unacked"] == 25, 10, message="published")
            await rig.journal.mark_acked([r.id for r in recs[:20]] + [recs[-1].id])   # the head too
            now = int(time.time() * 1000)
            assert await rig.journal.prune(90, now_ms=now + 89 * day_ms) == 0      # not old enough yet
            assert await rig.journal.prune(90, now_ms=now + 91 * day_ms) == 20
            kept = list(rig.journal.payloads())
            assert [json.loads(p)["seq"] for p in kept] == list(range(21, 31))      # unacked and head stay
            assert rig.journal.stats()["first_seq"] == 21
            report = verify_chain(kept, rig.key.public_key(), prev=recs[19].hash)
            assert report.ok and report.last_seq == 30
        finally:
            await rig.__aexit__()
        # After a restart the chain continues from the head, not from what is left.
        store = Store.open(tmp_path / "state")
        try:
            journal = Journal(store, rig.key, "k-1", fleet="f")
            nxt = await journal.record({"n": 30})
            assert (nxt.seq, nxt.prev) == (31, recs[-1].hash)
        finally:
            store.close()
    try:
        asyncio.run(go())
    finally:
        broker.stop()


def test_a_record_rotted_on_disk_is_not_published_and_raises_store_corrupt(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    sub = DurableSubscriber(broker.port, f"{PREFIX}/tx")

    async def go() -> None:
        rig = Rig(tmp_path, broker.port)
        await rig.outbox.start()                # not connected yet: everything stays queued
        try:
            recs = [await rig.journal.record({"n": i}) for i in range(10)]
            # One bit flipped in record 5's stored bytes: SQLite's checks cannot see it.
            rotten = bytearray(recs[4].payload)
            rotten[20] ^= 0x01
            with rig.store.conn:
                rig.store.conn.execute("UPDATE journal SET payload = ? WHERE seq = 5", (bytes(rotten),))
            await rig.uplink.start()
            assert await rig.outbox.wait_drained(30)
            # A record made after them arrives after them (in order within the class): once it is
            # there, record 5 would have been too.
            after = await rig.journal.record({"n": 10})
            await wait_until_async(lambda: after.payload in sub.payloads("/tx"), 30,
                                   message="the intact records and the one after")
            assert sub.payloads("/tx") == [r.payload for r in recs if r.seq != 5] + [after.payload]
            assert ("store_corrupt", True) in rig.alarms
        finally:
            await rig.__aexit__()
    try:
        asyncio.run(go())
    finally:
        sub.close()
        broker.stop()


def test_refused_publish_stays_queued_alarms_and_goes_once_allowed(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    acl = workdir / "acl"
    acl.write_text(f"topic readwrite {PREFIX}/tx\ntopic read #\n")
    broker = start_broker(workdir, f"acl_file {acl}")
    sub = DurableSubscriber(broker.port, f"{PREFIX}/#")

    async def go() -> None:
        async with Rig(tmp_path, broker.port) as rig:
            await rig.outbox.enqueue("alarm", f"{PREFIX}/alarm/door_open", b'{"a":1}', retain=True)
            await rig.journal.record({"n": 1})
            await wait_until_async(lambda: ("publish_refused", True) in rig.alarms, 20, message="publish_refused")
            assert rig.outbox.pending_count() >= 1 and rig.outbox.stats()["refused"] == {"alarm": "0x87"}
            await wait_until_async(lambda: sub.payloads("/tx"), 20, message="tx, whose class is not refused")
            acl.write_text(f"topic readwrite {PREFIX}/#\ntopic read #\n")
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGHUP)          # mosquitto re-reads its ACL
            assert await rig.outbox.wait_drained(40)         # retried after the back-off
            assert ("publish_refused", False) in rig.alarms
            await wait_until_async(lambda: sub.payloads("/alarm/door_open"), 10, message="the alarm")
    try:
        asyncio.run(go())
    finally:
        sub.close()
        broker.stop()


def test_limits_refuse_droppable_keep_durable_and_alarm(tmp_path: Path) -> None:
    async def go() -> None:
        # No broker at all: everything stays queued.
        async with Rig(tmp_path, 1, max_bytes=10_000) as rig:
            rig.outbox.enqueue_nowait("health", f"{PREFIX}/health", b"{}")
            for i in range(30):
                await rig.journal.record({"pad": "p" * 300, "n": i})
            assert rig.outbox.backlog and ("outbox_backlog", True) in rig.alarms
            with pytest.raises(StoreFull):
                await rig.outbox.enqueue("health", f"{PREFIX}/health", b"{}")
            assert rig.outbox.stats()["depth"]["health"] == 0           # evicted
            await rig.outbox.enqueue("evidence", f"{PREFIX}/evidence", b"e" * 100)   # durable: still taken
            assert rig.outbox.stats()["depth"] == {"result": 0, "alarm": 0, "config": 0, "tx": 30,
                                                   "evidence": 1, "health": 0}
        async with Rig(tmp_path, 1, min_free_bytes=2**62) as rig:
            assert rig.outbox.disk_low and ("disk_low", True) in rig.alarms
            with pytest.raises(StoreFull):
                await rig.outbox.enqueue("health", f"{PREFIX}/health", b"{}")
            assert rig.outbox.pending_count() == 31                     # survived the restart
    asyncio.run(go())


def test_restart_replays_in_order(tmp_path: Path) -> None:
    broker = DevBroker(tmp_path / "broker", persistence=False)
    port = broker.port

    async def offline() -> list[bytes]:
        async with Rig(tmp_path, port) as rig:
            return [(await rig.journal.record({"n": i})).payload for i in range(40)]
    payloads = asyncio.run(offline())
    broker.start()
    sub = DurableSubscriber(port, f"{PREFIX}/tx")

    async def online() -> None:
        async with Rig(tmp_path, port) as rig:
            assert rig.outbox.pending_count() == 40
            assert await rig.outbox.wait_drained(30)
        await wait_until_async(lambda: len(sub.payloads()) >= 40, 20, message="the replay")
    try:
        asyncio.run(online())
        assert sub.payloads() == payloads
    finally:
        sub.close()
        broker.stop()
