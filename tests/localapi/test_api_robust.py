# SPDX-License-Identifier: Apache-2.0
"""Abuse of the local API leaves the agent unharmed: it keeps serving, and keeps reporting health.

The real agent process on simulated hardware, a real Mosquitto: while one
thread floods the API (10,000+ messages in bursts, 1 MB messages, wrong and
missing tokens, second screens), the test watches the broker until the
agent's periodic health has kept coming; then every message must have had
its one acknowledge, and a citizen's session must still work end to end.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import psutil
from apikit import ApiClient, RunningApi, api_config, ws_url
from kiosktest import AgentProcess, Subscriber, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.sim.devbroker import DevBroker

BURST = 1000
MIN_MESSAGES = 10_000


def _burst(client: ApiClient, first_id: int) -> Counter[str]:
    """BURST messages, mixed good and bad, sent at once; returns the acknowledge statuses they got."""
    kinds = []
    for n in range(BURST):
        rid = first_id + n
        match n % 10:
            case 0:
                client.send_raw("{not json")
            case 1:
                client.send("Kiosk.Launch", request_id=rid)
            case 2:
                client.send("Kiosk.Status", request_id=first_id)         # likely a duplicate in flight, or not
            case 3:
                client.send_raw(json.dumps({"header": {"name": "Kiosk.Status", "requestId": -rid, "type": "command"}}))
            case _:
                client.send("Kiosk.Status", request_id=rid)
        kinds.append(n % 10)
    statuses: Counter[str] = Counter()
    for _ in range(BURST):
        ack = client.wait(lambda m: m["header"]["type"] == "acknowledge", 60, "an acknowledge")
        statuses[str(ack["header"]["status"])] += 1
    return statuses


def test_floods_big_messages_and_strangers_leave_the_agent_serving(tmp_path: Path) -> None:
    with DevBroker(tmp_path / "broker") as broker:
        config, port = api_config(tmp_path / "agent", broker.url, overrides={"interval_s": "5"})
        agent = AgentProcess(tmp_path / "agent", broker_url=broker.url, config_text=config.read_text()).start()
        health = Subscriber(broker.url, "kiosk/+/+/+/health")
        try:
            api = RunningApi(agent, port, broker.url)
            driver = api.client("kiosk")
            assert driver.command("Kiosk.Status").code == "success"
            assert agent.proc is not None
            rss_before = psutil.Process(agent.proc.pid).memory_info().rss
            stop = threading.Event()
            totals: Counter[str] = Counter()
            sent = [0]
            failures: list[BaseException] = []

            def abuse() -> None:
                try:
                    with api.client("kiosk", max_queue=None) as flood:
                        next_id = 1
                        while not stop.is_set() or sent[0] < MIN_MESSAGES:
                            totals.update(_burst(flood, next_id))
                            next_id += BURST
                            sent[0] += BURST
                            big = json.dumps({"header": {"name": "Kiosk.Status", "requestId": next_id,
                                                         "type": "command"}, "payload": {"x": "y" * 2**20}})
                            flood.send_raw(big)
                            ack = flood.wait(lambda m, rid=next_id: m["header"].get("requestId") == rid, 60,
                                             "1 MB refusal")
                            assert ack["header"]["status"] == "invalidMessage"
                            totals["1MB refused"] += 1
                            for token in (None, "wrong", api.token + "x"):
                                try:
                                    ApiClient(ws_url(port, "kiosk", token))
                                except InvalidStatus as exc:
                                    assert exc.response.status_code == 401
                                    totals["401"] += 1
                            with api.client("kiosk") as second:
                                refused = second.command("Kiosk.BeginSession", {"serviceId": "quick_print"})
                                assert refused.code == "sequenceError"
                                totals["read-only"] += 1
                except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                    failures.append(exc)

            since = len(health.messages)
            worker = threading.Thread(target=abuse, name="api-abuse")
            worker.start()
            try:
                # Health keeps coming while the API is flooded: two periodic snapshots (interval 5 s).
                wait_until(lambda: failures or len([m for m in health.messages[since:]
                                                    if m.data.get("reason") == "periodic"]) >= 2,
                           90, message="periodic health during the flood")
            finally:
                stop.set()
                worker.join(120)
            assert not failures, failures
            assert sent[0] >= MIN_MESSAGES
            # Every message got its one acknowledge: the accepted ones and each refusal's status.
            assert totals["None"] > 0 and totals["invalidMessage"] >= sent[0] // 10 * 2
            assert totals["invalidRequestID"] >= sent[0] // 10
            assert set(totals) <= {"None", "invalidMessage", "invalidRequestID", "tooManyRequests", "1MB refused",
                                   "401", "read-only"}
            assert totals["401"] and totals["read-only"] and totals["1MB refused"]
            # A message over the socket's limit closes only that connection.
            with api.client("kiosk") as huge:
                huge.send_raw("z" * (3 * 2**20))
                try:
                    huge.wait(lambda _m: False, 20)
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1009
            # Still the kiosk it was: the door raises its alarm at once, and a citizen is served.
            agent.sim("door", "open")
            health.wait_for("/health", lambda d: "door_open" in d.get("alarms", []), timeout=15)
            agent.sim("door", "close")
            wait_until(lambda: driver.command("Kiosk.GetServices").payload["services"][0]["available"], 15,
                       message="services available again")
            rid = driver.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
            driver.step(rid, "read_id")
            agent.sim("idcard", "place", "resident")
            driver.step(rid, "confirm")
            driver.command("Kiosk.Confirm")
            assert driver.finish(rid).code == "success"
            driver.close()
            rss_after = psutil.Process(agent.proc.pid).memory_info().rss
            assert rss_after - rss_before < 64 * 2**20, f"RSS grew by {(rss_after - rss_before) >> 20} MiB"
            assert agent.proc.poll() is None and "Traceback" not in agent.log, agent.log[-4000:]
            # Dozens of refused upgrades, one log line a minute at most: strangers cannot fill the journal.
            assert totals["401"] >= 30 and agent.log.count("refused: ") <= 2, agent.log.count("refused: ")
            health.assert_valid()
        finally:
            health.close()
            agent.terminate()
