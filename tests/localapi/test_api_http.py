# SPDX-License-Identifier: Apache-2.0
"""The local API's HTTP side: static files of the UI, and who may open a WebSocket."""

from __future__ import annotations

import json

import pytest
from apikit import ApiClient, RunningApi, ws_url
from websockets.exceptions import InvalidStatus

from agent.localapi.server import UI_DIR


def test_root_is_the_ui_index_with_sensible_headers(api: RunningApi) -> None:
    status, headers, body = api.http("/?token=whatever")
    assert status == 200
    assert body == (UI_DIR / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["etag"]
    # The page's URL carries the token: no referrer leaves with it, nothing frames the page.
    assert headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    again, _, empty = api.http("/", {"If-None-Match": headers["etag"]})
    assert (again, empty) == (304, b"")


def test_every_ui_file_is_served_with_its_content_type(api: RunningApi) -> None:
    expected = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                ".png": "image/png", ".json": "application/json", ".woff2": "font/woff2"}
    files = [p for p in UI_DIR.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)]
    assert files, "the UI directory is empty"
    for path in files:
        rel = path.relative_to(UI_DIR).as_posix()
        status, headers, body = api.http("/" + rel)
        assert status == 200, rel
        assert body == path.read_bytes(), rel
        if path.suffix in expected:
            assert headers["content-type"].startswith(expected[path.suffix]), (rel, headers["content-type"])
        if rel.startswith("vendor/") and "@" in rel.split("/")[1]:
            assert "immutable" in headers["cache-control"], rel


@pytest.mark.parametrize("path", [
    "/../agent.toml", "/%2e%2e/%2e%2e/config.py", "/css/../../server.py", "/..%2fserver.py", "/js/%00.js",
    "/.hidden", "/css/", "/css", "/js", "/vendor/", "/nonexistent.html", "/%ff%fe", "/index.html/", "//etc/passwd",
    "/\\..\\server.py",
])
def test_paths_outside_the_ui_or_directories_are_not_found(api: RunningApi, path: str) -> None:
    status, _headers, body = api.http(path)
    assert status in (400, 404), (path, status)
    assert b"<html" not in body.lower() and b"import " not in body and b"token" not in body.lower()


def test_another_host_name_gets_nothing(api: RunningApi) -> None:
    # A web page that rebinds its own name to 127.0.0.1 reaches neither the UI nor the API.
    status, _, body = api.http("/", {"Host": f"evil.example:{api.port}"})
    assert status == 421 and b"127.0.0.1" in body


def _refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        ApiClient(url, **kwargs)  # type: ignore[arg-type]
    return refused.value.response.status_code


def test_upgrade_without_or_with_a_wrong_token_is_401(api: RunningApi) -> None:
    for service in ("", "kiosk", "printer", "dev"):
        assert _refused(ws_url(api.port, service)) == 401
        assert _refused(ws_url(api.port, service, "not-the-token")) == 401
        assert _refused(ws_url(api.port, service, api.token[:-1])) == 401
    assert _refused(ws_url(api.port, "kiosk"), additional_headers={"Authorization": "Bearer nope"}) == 401


def test_the_token_in_a_header_or_the_query_opens_the_socket(api: RunningApi) -> None:
    with ApiClient(ws_url(api.port, "kiosk"), additional_headers={"Authorization": f"Bearer {api.token}"}) as c:
        assert c.command("Kiosk.Status").code == "success"
    with api.client("") as c:
        assert c.command("ServicePublisher.GetServices").code == "success"


def test_unknown_service_404_and_foreign_origin_403(api: RunningApi) -> None:
    assert _refused(ws_url(api.port, "vault", api.token)) == 404
    assert _refused(ws_url(api.port, "kiosk", api.token), origin="http://evil.example") == 403  # type: ignore[arg-type]
    # The page's own origin is fine.
    with ApiClient(ws_url(api.port, "kiosk", api.token), origin=f"http://127.0.0.1:{api.port}") as c:  # type: ignore[arg-type]
        assert c.command("Kiosk.Status").code == "success"


def test_the_token_file_is_private_and_holds_the_token(api: RunningApi) -> None:
    path = api.agent.state_dir / "local-api.token"
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.read_text().strip() == api.token and len(api.token) >= 40


def test_discovery_lists_every_service_with_its_uri(api: RunningApi) -> None:
    with api.client("") as c:
        services = c.command("ServicePublisher.GetServices").payload["services"]
    uris = {s["interface"]: s["serviceURI"] for s in services}
    assert set(uris) == {"Kiosk", "CardReader", "Printer", "Camera", "BarcodeReader", "Lights", "Auxiliaries", "Dev"}
    for interface, uri in uris.items():
        with ApiClient(f"{uri}?token={api.token}") as c:
            reply = c.command("Common.Capabilities")
            assert reply.code == "success", interface
            assert json.dumps(reply.payload)


def test_port_probes_and_garbage_handshakes_leave_no_traceback_in_the_log(api: RunningApi) -> None:
    """A probe that connects and closes logs nothing; garbage in place of a request is one WARNING line."""
    import socket

    from kiosktest import wait_until

    for _ in range(3):
        socket.create_connection(("127.0.0.1", api.port), timeout=5).close()
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        sock.settimeout(5)
        try:
            sock.recv(1024)
        except OSError:
            pass
    assert wait_until(lambda: "bad opening handshake refused" in api.agent.log, timeout=10), api.agent.log[-2000:]
    status, _, _ = api.http("/")                       # still serving
    assert status == 200
    tail = api.agent.log
    assert "opening handshake failed" not in tail and "Traceback" not in tail, tail[-3000:]
    assert tail.count("bad opening handshake refused") == 1, tail[-3000:]
