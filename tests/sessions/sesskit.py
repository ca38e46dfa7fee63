# SPDX-License-Identifier: Apache-2.0
"""Helpers for the session tests: configs, the agent in-process, PII scans.

The agent runs exactly as ``kiosk-agent run`` builds it (``agent.runtime.daemon.Agent``),
on the simulated peripherals, against the test's real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kiosktest import wait_until_async

from agent.config import DEFAULT_SIM_CONFIG, Config, load_config
from agent.sim.devrun import write_sim_config
from agent.wire.sealing import X25519PrivateKey, public_key_b64, save_private_key
from hal.sim.idcard import sample_card, synthetic_number

__all__ = ["BackOffice", "session_config", "running_agent", "encodings", "find_pii", "QUICK_SERVICES",
           "wait_event"]

# Short timeouts so a walk-away is seconds, not minutes.
QUICK_SERVICES = '''
[[services]]
id = "quick_print"
name_zh = "快速打印"
name_en = "Quick print"
offline = true
steps = [{ kind = "read_id", timeout_s = 20 }, { kind = "confirm", timeout_s = 3 },
         { kind = "print_receipt", timeout_s = 20 }]

[[services]]
id = "photo_consent"
name_zh = "拍照（同意）"
name_en = "Photo by consent"
offline = true
mail_document = true
steps = [{ kind = "read_id", timeout_s = 20 }, { kind = "capture_photo", timeout_s = 20 },
         { kind = "capture_address", timeout_s = 20 }, { kind = "confirm", timeout_s = 20 },
         { kind = "print_receipt", timeout_s = 20 }]

[[services]]
id = "photo_legal"
name_zh = "拍照（法定）"
name_en = "Photo by legal basis"
offline = true
face_legal_basis = "test: a regulation requires the photo"
steps = [{ kind = "read_id", timeout_s = 20 }, { kind = "capture_photo", timeout_s = 20 },
         { kind = "confirm", timeout_s = 20 }]

[[services]]
id = "pay"
name_zh = "缴费"
name_en = "Pay"
offline = true
steps = [{ kind = "confirm", timeout_s = 20 }, { kind = "scan_payment", timeout_s = 20 },
         { kind = "print_receipt", timeout_s = 20 }]
'''


class BackOffice:
    """The back office's evidence key pair, private key in a file."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.key = X25519PrivateKey.generate()
        self.key_file = directory / "backoffice.pem"
        save_private_key(self.key, self.key_file)
        self.public_b64 = public_key_b64(self.key)


def session_config(workdir: Path, broker_url: str, backoffice: BackOffice, *, extra: str = "",
                   overrides: dict[str, str] | None = None) -> Path:
    """The shipped simulation config, with the back office's key and ``extra`` TOML appended."""
    path = write_sim_config(workdir / "agent.toml", broker_url, workdir / "state", DEFAULT_SIM_CONFIG,
                            overrides)
    text = path.read_text(encoding="utf-8")
    text += f'\n[evidence]\nrecipient_public_key = "{backoffice.public_b64}"\n' + extra
    path.write_text(text, encoding="utf-8")
    load_config(path)
    return path


@contextlib.asynccontextmanager
async def running_agent(cfg: Config, *, connect: bool = True) -> AsyncIterator[tuple[Any, Any]]:
    """``(agent, engine)`` of a running in-process agent; stopped cleanly on exit."""
    from agent.runtime.daemon import Agent

    agent = Agent(cfg)
    runner = asyncio.create_task(agent.run())
    try:
        for _ in range(600):
            if agent.session_engine is not None or runner.done():
                break
            await asyncio.sleep(0.05)
        if runner.done():
            runner.result()
        engine = agent.session_engine
        assert engine is not None, "the session engine did not start"
        # The engine records and queues through the agent's own journal and outbox.
        assert engine.io.journal is agent.journal and engine.io.outbox is agent.outbox
        if connect:
            assert agent.uplink is not None and await agent.uplink.wait_connected(15), "the agent did not connect"
        yield agent, engine
    finally:
        agent.request_stop()
        await asyncio.wait_for(runner, 20)


async def wait_event(queue: asyncio.Queue[dict[str, Any]], kind: str, timeout: float = 20.0,
                     **match: Any) -> dict[str, Any]:
    """The next engine event of ``kind`` (and matching fields), skipping others."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await asyncio.wait_for(queue.get(), max(0.01, deadline - loop.time()))
        if event.get("event") == kind and all(event.get(k) == v for k, v in match.items()):
            return event


def encodings(text: str) -> dict[str, bytes]:
    """``text`` as UTF-8, UTF-16-LE (the card's own encoding) and GB18030."""
    return {"utf-8": text.encode("utf-8"), "utf-16-le": text.encode("utf-16-le"),
            "gb18030": text.encode("gb18030")}


def find_pii(blob: bytes, secrets: list[str]) -> list[str]:
    """Which of ``secrets`` occur in ``blob``, in any of the three encodings (also JSON-escaped)."""
    hits = []
    for secret in secrets:
        forms = encodings(secret)
        forms["json-escaped"] = json.dumps(secret).strip('"').encode("ascii")
        for name, form in forms.items():
            if form and form in blob:
                hits.append(f"{secret!r} as {name}")
    return hits


def quiet_logs() -> None:
    logging.getLogger("agent.uplink.connection").setLevel(logging.WARNING)


RECORD_PRINT = '''
[[services]]
id = "record_print"
name_zh = "记录打印"
name_en = "Record print"
offline = true
receipt = "purpose"
steps = [{ kind = "read_id", timeout_s = 20 }, { kind = "confirm", timeout_s = 20 },
         { kind = "print_receipt", timeout_s = 20 }]
'''


def resident_card(body17: str, name: str) -> Any:
    """The simulator's resident card with ``name`` and a valid number built from 17 digits."""
    return dataclasses.replace(sample_card("resident"), name=name, id_number=synthetic_number(body17))


async def until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll without blocking the loop the agent runs on."""
    return await wait_until_async(predicate, timeout, interval=0.05, message=what)
