# SPDX-License-Identifier: Apache-2.0
"""docs/local-api.yaml, the JSON Schemas and the running server agree."""

from __future__ import annotations

import grp
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from apikit import RunningApi

from agent.localapi.auth import write_token
from agent.localapi.contract import SCHEMA_DIR, schema, validate_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "local-api.yaml"
PREFIX = "../agent/localapi/schemas/local-api.json#/$defs/"


def _refs() -> set[str]:
    return set(re.findall(re.escape(PREFIX) + r"([A-Za-z.]+)'", DOC.read_text(encoding="utf-8")))


def test_the_document_and_the_schemas_name_the_same_messages() -> None:
    doc = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.") and doc["servers"]["kiosk"]["host"] == "127.0.0.1:5846"
    defs = schema("local-api")["$defs"]
    messages = {name for name in defs if "." in name} | {"acknowledgePayload", "completion"}
    refs = _refs()
    assert refs <= set(defs), f"docs/local-api.yaml names missing schemas: {sorted(refs - set(defs))}"
    assert messages <= refs, f"schemas not in docs/local-api.yaml: {sorted(messages - refs)}"
    jsonschema.Draft202012Validator.check_schema(schema("local-api"))
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == ["local-api.json"]


def test_every_command_and_event_the_server_offers_has_a_schema(api: RunningApi) -> None:
    defs = schema("local-api")["$defs"]
    with api.client("") as publisher:
        uris = [s["serviceURI"] for s in publisher.command("ServicePublisher.GetServices").payload["services"]]
        caps = [publisher.command("Common.Capabilities").payload]
    for uri in uris:
        with api.client(uri.rsplit("/", 1)[1]) as client:
            caps.append(client.command("Common.Capabilities").payload)
    seen = 0
    for cap in caps:
        for interface in cap["interfaces"]:
            for name in interface["commands"]:
                assert f"{name}.completion" in defs, name
                seen += 1
            for name in interface["events"]:
                assert name in defs, name
    assert seen >= 30


@pytest.mark.parametrize("message", [
    # a card read that carries more than the masked forms
    {"header": {"name": "Kiosk.CardReadEvent", "requestId": 3, "type": "event", "version": "1.0"},
     "payload": {"cardType": "resident", "nameMasked": "测**例", "idMasked": "99************0017",
                 "idNumber": "990000199001010017"}},
    # an unmasked number where the masked one belongs
    {"header": {"name": "Kiosk.CardReadEvent", "requestId": 3, "type": "event", "version": "1.0"},
     "payload": {"cardType": "resident", "nameMasked": "测**例", "idMasked": "990000199001010017"}},
    {"header": {"name": "Kiosk.Status", "requestId": 3, "type": "completion", "version": "1.0"}, "payload": {}},
    {"header": {"name": "Kiosk.Confirm", "requestId": 3, "type": "completion", "version": "1.0"},
     "payload": {"completionCode": "sequenceError"}},
    {"header": {"name": "Kiosk.Confirm", "type": "acknowledge", "version": "1.0", "status": None}, "payload": {}},
    {"header": {"name": "Kiosk.CardLeftEvent", "requestId": 4, "type": "unsolicited", "version": "1.0"},
     "payload": {"reminder": 1}},
    {"header": {"name": "Kiosk.Unheard", "type": "unsolicited", "version": "1.0"}, "payload": {}},
    {"header": {"name": "Common.StatusChangedEvent", "type": "unsolicited", "version": "1.0"},
     "payload": {"changed": {}}},
])
def test_the_schemas_refuse_what_the_server_must_never_send(message: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(jsonschema.ValidationError):
        validate_message(json.loads(json.dumps(message)))


def test_the_token_file_takes_the_screen_group_when_it_exists(tmp_path: Path) -> None:
    group = next((g for g in ("nogroup", "users", "daemon") if _has_group(g)), None)
    if group is None:
        pytest.skip("no spare group on this machine")
    path = tmp_path / "run" / "local-api.token"
    write_token(path, "abc", group=group)
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_gid, path.read_text()) == (0o640, grp.getgrnam(group).gr_gid, "abc\n")
    write_token(path, "def", group="no-such-group-here")
    assert path.stat().st_gid == os.getegid() and path.read_text() == "def\n"
    assert [p.name for p in path.parent.iterdir()] == ["local-api.token"]     # no temporary left behind


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
