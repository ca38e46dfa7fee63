# SPDX-License-Identifier: Apache-2.0
"""XFS4IoT framing: every malformed or unwelcome message gets its acknowledge status, and nothing breaks."""

from __future__ import annotations

import json

import pytest
from apikit import RunningApi
from websockets.exceptions import ConnectionClosed


def _ack(client, rid: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    return client.wait(lambda m: m["header"]["type"] == "acknowledge"
                       and (rid is None or m["header"].get("requestId") == rid), what=f"an acknowledge {rid}")


@pytest.mark.parametrize(("raw", "status", "rid"), [
    ("{not json", "invalidMessage", 0),
    ("[]", "invalidMessage", 0),
    ('{"payload": {}}', "invalidMessage", 0),
    ('{"header": "Kiosk.Status"}', "invalidMessage", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": 5, "type": "event", "version": "1.0"}}', "invalidMessage", 5),
    ('{"header": {"name": "kiosk status", "requestId": 6, "type": "command"}}', "invalidMessage", 6),
    ('{"header": {"name": "Kiosk.Status", "requestId": 7, "type": "command", "version": "2.0"}}', "invalidMessage", 7),
    ('{"header": {"name": "Kiosk.Status", "requestId": 8, "type": "command", "timeout": -1}}', "invalidMessage", 8),
    ('{"header": {"name": "Kiosk.Status", "requestId": 9, "type": "command"}, "payload": [1]}', "invalidMessage", 9),
    ('{"header": {"name": "Kiosk.Launch", "requestId": 10, "type": "command"}}', "invalidMessage", 10),
    ('{"header": {"name": "Printer.Print", "requestId": 11, "type": "command"}}', "invalidMessage", 11),
    ('{"header": {"name": "Kiosk.Status", "requestId": 0, "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": -3, "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": "12", "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": 1.5, "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": true, "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "type": "command"}}', "invalidRequestID", 0),
    ('{"header": {"name": "Kiosk.Status", "requestId": 9007199254740992, "type": "command"}}', "invalidRequestID", 0),
])
def test_bad_messages_get_their_status_and_the_connection_goes_on(api: RunningApi, raw: str, status: str,
                                                                   rid: int) -> None:
    with api.client("kiosk") as client:
        client.send_raw(raw)
        ack = _ack(client)
        assert ack["header"]["status"] == status, ack
        assert ack["header"]["requestId"] == rid
        assert ack["header"]["errorDescription"]
        # No completion follows a refused command, and the same connection still works.
        after = client.command("Kiosk.Status")
        assert after.code == "success"
        assert not [m for m in client.backlog if m["header"]["type"] == "completion"]


def test_every_service_refuses_commands_it_does_not_have(api: RunningApi) -> None:
    for service, foreign in (("printer", "Kiosk.BeginSession"), ("kiosk", "Dev.Simulate"), ("", "Common.Status"),
                             ("lights", "Printer.Status")):
        with api.client(service) as client:
            reply = client.answer(client.send(foreign, {}))
            assert reply.ack["header"]["status"] == "invalidMessage", (service, reply.ack)
            assert foreign in reply.ack["header"]["errorDescription"]


def test_a_duplicate_request_id_in_flight_is_refused(api: RunningApi) -> None:
    with api.client("kiosk") as client:
        # A session waiting for a card stays in flight: its id cannot be used again meanwhile.
        rid = client.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        client.event(rid, "Kiosk.StepEvent")
        client.send("Kiosk.Status", request_id=rid)
        again = _ack(client, rid)
        assert again["header"]["status"] == "invalidRequestID"
        assert client.command("Kiosk.Cancel").code == "success"
        done = client.finish(rid)
        assert (done.code, done.payload["outcome"]) == ("canceled", "abandoned")
        # Completed: the id is free again.
        assert client.answer(client.send("Kiosk.Status", request_id=rid)).code == "success"


def test_more_requests_in_flight_than_allowed_are_refused(api: RunningApi) -> None:
    # Quick commands free their slot at once, so only a burst sent faster than they complete
    # meets the limit; the running session holds one slot throughout.
    with api.client("kiosk", max_queue=None) as client:
        rid = client.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        ids = [client.send("Kiosk.Status") for _ in range(2000)]
        acks = {m["header"]["requestId"]: m["header"]["status"]
                for m in (_ack(client, i) for i in ids)}
        assert set(acks.values()) <= {None, "tooManyRequests"}
        assert "tooManyRequests" in acks.values(), "2,000 commands at once never met the in-flight limit"
        accepted = [i for i, status in acks.items() if status is None]
        for i in accepted:
            assert client.finish(i).code == "success"
        refused = [i for i, status in acks.items() if status is not None]
        assert not [m for m in client.backlog if m["header"].get("requestId") in refused]
        client.command("Kiosk.Cancel")
        assert client.finish(rid).code == "canceled"


def test_a_message_over_the_limit_is_refused_unread_and_one_over_the_socket_limit_closes(api: RunningApi) -> None:
    with api.client("kiosk") as client:
        big = json.dumps({"header": {"name": "Kiosk.Status", "requestId": 77, "type": "command"},
                          "payload": {"pad": "x" * 1_000_000}})
        client.send_raw(big)
        ack = _ack(client, 77)
        assert ack["header"]["status"] == "invalidMessage" and "limit" in ack["header"]["errorDescription"]
        assert client.command("Kiosk.Status").code == "success"
        client.send_raw(b"\x00" * (3 * 2**20))
        with pytest.raises(ConnectionClosed) as closed:
            client.wait(lambda _m: False, 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with api.client("kiosk") as fresh:
        assert fresh.command("Kiosk.Status").code == "success"


def test_common_cancel_ends_the_named_or_all_requests(api: RunningApi) -> None:
    with api.client("kiosk") as client:
        rid = client.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        client.event(rid, "Kiosk.StepEvent")
        cancel = client.command("Common.Cancel", {"requestIds": [rid]})
        assert cancel.code == "success"
        done = client.finish(rid)
        assert done.code == "canceled" and done.payload["outcome"] == "abandoned"
        # Without requestIds: every request of this connection.
        rid = client.start("Kiosk.BeginSession", {"serviceId": "quick_print"})
        client.event(rid, "Kiosk.StepEvent")
        assert client.command("Common.Cancel").code == "success"
        assert client.finish(rid).code == "canceled"
        bad = client.command("Common.Cancel", {"requestIds": "all"})
        assert bad.code == "invalidData"


def test_a_command_timeout_completes_with_timeout(api: RunningApi) -> None:
    with api.client("kiosk") as client:
        rid = client.start("Kiosk.BeginSession", {"serviceId": "quick_print"}, timeout=300)
        done = client.finish(rid)
        assert done.code == "timeOut" and done.payload["outcome"] == "abandoned"
        assert [e["header"]["name"] for e in done.events][:1] == ["Kiosk.StepEvent"]
        assert client.command("Kiosk.Status").payload["session"] is None
