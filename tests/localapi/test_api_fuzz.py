# SPDX-License-Identifier: Apache-2.0
"""Fuzzed frames: each gets exactly one acknowledge, a refusal gets no completion, nothing drives the kiosk."""

from __future__ import annotations

import json
from typing import Any

from apikit import RunningApi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["Kiosk.Status", "Kiosk.BeginSession", "Kiosk.Confirm", "Common.Cancel", "Common.Status", "Kiosk.X", "kiosk",
         "", "Kiosk.", ".Status", "Dev.Simulate"]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**60, 2**60) | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
headers = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(NAMES) | json_values,
    "requestId": st.integers(-3, 2**54) | json_values,
    "type": st.sampled_from(["command", "event", "completion", "acknowledge", "unsolicited"]) | json_values,
    "version": st.sampled_from(["1.0", "1.5", "2.0"]) | json_values,
    "timeout": st.integers(-5, 2**40) | json_values,
})
frames = st.one_of(
    st.builds(lambda h, p: json.dumps({"header": h, "payload": p}), headers,
              st.dictionaries(st.sampled_from(["serviceId", "requestIds", "face", "language", "device"]), json_values,
                              max_size=3) | json_values),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


def test_fuzzed_frames_get_one_acknowledge_each_and_never_start_a_session(api: RunningApi) -> None:
    with api.client("kiosk") as client:
        outcomes: list[tuple[Any, Any]] = []

        @settings(max_examples=400, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(frame=frames)
        def send_one(frame: str | bytes) -> None:
            client.send_raw(frame)
            ack = client.wait(lambda m: m["header"]["type"] == "acknowledge", 20, "an acknowledge")
            status = ack["header"]["status"]
            assert status in (None, "invalidMessage", "invalidRequestID", "tooManyRequests")
            if status is None:
                rid = ack["header"]["requestId"]
                done = client.finish(rid, 20)
                outcomes.append((ack["header"]["name"], done.payload["completionCode"]))
                if ack["header"]["name"] == "Kiosk.BeginSession" and done.payload.get("outcome") is None:
                    return
                assert ack["header"]["name"] != "Kiosk.BeginSession", "a fuzzed frame started a session"
            else:
                assert ack["header"]["errorDescription"]

        send_one()
        assert client.command("Kiosk.Status").payload["session"] is None
        assert api.agent.proc is not None and api.agent.proc.poll() is None
