# SPDX-License-Identifier: Apache-2.0
"""No full ID number, name or address reaches the page: frames, console, DOM, storage, cookies.

The first tests prove the checker sees a leak in each place it looks (a
checker that cannot fail would prove nothing); then real journeys with each of
the four simulated card types are checked against that card's own data.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from uikit import KioskScreen, PageRecorder, card_secrets, find_secrets, pension_journey

from agent.sim.devbroker import free_port
from hal.sim.idcard import SAMPLE_KINDS, sample_card


def test_card_secrets_are_the_simulated_cards_own_data() -> None:
    card = sample_card("resident")
    secrets = card_secrets("resident")
    assert card.id_number in secrets and card.name in secrets and card.address in secrets
    assert card_secrets("foreign_pr_2017")[0] == "ZZZ990101000001"


def test_find_secrets_sees_every_encoding() -> None:
    name = sample_card("resident").name
    assert find_secrets(f'{{"n": "{name}"}}', [name])
    assert find_secrets(name.encode("utf-16-le"), [name])
    assert find_secrets(name.encode("gb18030"), [name])
    assert find_secrets('{"n": "\\u6d4b\\u8bd5\\u6837\\u4f8b"}', [name])      # JSON's ASCII escapes
    assert not find_secrets("测试**", [name])


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A WebSocket echo server on loopback: what the page sends comes back as a received frame."""
    import websockets

    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[None] | None = None

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    def page(connection: Any, request: Any) -> Any:
        # A plain GET gets an empty page, so the test page has this loopback origin (Chromium keeps
        # an opaque origin's page off loopback sockets).
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(200, "<!doctype html><title>echo</title>")
        return None

    async def serve() -> None:
        nonlocal stop
        stop = loop.create_future()
        async with websockets.serve(echo, "127.0.0.1", port, process_request=page):
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(lambda: stop.set_result(None) if stop and not stop.done() else None)
    thread.join(10)


def test_checker_catches_a_leak_in_each_place(browser: Any, echo_server: int) -> None:
    """A page that misbehaves in every way is caught in every way."""
    context = browser.new_context()
    try:
        page = context.new_page()
        recorder = PageRecorder()
        recorder.attach(page)
        page.goto(f"http://127.0.0.1:{echo_server}/")
        card = sample_card("resident")
        screen = KioskScreen(page=page, context=context, agent=None,  # type: ignore[arg-type]
                             broker=None, port=echo_server, token="", tx=None, recorder=recorder)
        assert screen.leaks() == []
        page.evaluate("""([port, number]) => new Promise((resolve) => {
            const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
            ws.onopen = () => ws.send(JSON.stringify({payload: {id: number}}));
            ws.onmessage = () => { ws.close(); resolve(); };
        })""", [echo_server, card.id_number])
        page.evaluate("name => console.log('card', name)", card.name)
        page.evaluate("addr => { const p = document.createElement('p'); p.textContent = addr;"
                      " document.body.appendChild(p); }", card.address)
        found = "\n".join(screen.leaks())
        assert f"ws frame on ws://127.0.0.1:{echo_server}/: {card.id_number!r}" in found
        assert f"console: {card.name!r}" in found
        assert f"dom: {card.address!r}" in found and f"text: {card.address!r}" in found
    finally:
        context.close()


def test_checker_reads_storage_and_cookies(kiosk_screen: KioskScreen) -> None:
    """On the kiosk's own origin: what the page writes to storage or cookies is seen."""
    card = sample_card("resident")
    page = kiosk_screen.page
    assert not [hit for hit in kiosk_screen.leaks() if hit.startswith(("storage", "cookies"))]
    page.evaluate("n => { localStorage.setItem('x', n); }", card.name)
    page.evaluate("n => { sessionStorage.setItem('y', n); }", card.id_number)
    page.evaluate("n => { document.cookie = 'z=' + encodeURIComponent(n); }", card.id_number[-6:] + "X")
    found = "\n".join(kiosk_screen.leaks(card_secrets() + [card.id_number[-6:] + "X"]))
    assert f"storage: {card.name!r}" in found and f"storage: {card.id_number!r}" in found
    assert "cookies:" in found


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_no_card_data_reaches_the_page(kind: str, kiosk_screen: KioskScreen) -> None:
    """A whole journey with each card type: the page holds its masked number only."""
    tx = pension_journey(kiosk_screen, card=kind)
    number = sample_card(kind).id_number
    assert tx["id_masked"] != number and tx["id_masked"][-4:] == number[-4:]
    # The masked form did reach the page (so the frames checked above carried the card's session).
    assert any(tx["id_masked"] in str(payload) for _path, payload in kiosk_screen.recorder.received)
    kiosk_screen.assert_no_leaks(card_secrets(kind))
    assert not kiosk_screen.recorder.page_errors



def test_the_token_leaves_the_address_bar(kiosk_screen: KioskScreen) -> None:
    """The page keeps its API token in memory only: not in the URL, the DOM, storage or cookies."""
    page = kiosk_screen.page
    page.get_by_role("heading", name="请选择要办理的业务").wait_for()
    assert kiosk_screen.token and kiosk_screen.token not in page.url, page.url
    held = {where: blob for where, blob in kiosk_screen.snapshot().items() if kiosk_screen.token in blob}
    assert not held, f"the token is kept in {sorted(held)}"
