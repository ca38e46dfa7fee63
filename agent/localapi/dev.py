# SPDX-License-Identifier: Apache-2.0
"""``/dev``: the development panel's service, only with ``hal.backend = "sim"``.

``Dev.GetActions`` lists the simulators' control actions (what ``kiosk-agent
sim`` offers), ``Dev.Simulate`` runs one, ``Dev.GetReceipt`` gives the last
receipt the simulated printer received, as text rendered from its ESC/POS
bytes (the printer simulator's ``receipt`` action,
``hal.protocols.escpos.render_receipt``), and ``Dev.ReceiptPrintedEvent``
sends each new one (its count looked at once a second while a client is
connected).

The simulated card's data is synthetic, but a simulator's answer is still
filtered: only the keys listed in ``_SAFE_RESULT_KEYS`` go back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from agent.localapi import messages
from agent.localapi.service import CommandError, Reply, Request, Service

__all__ = ["DevService"]

Action = Callable[[list[str]], dict[str, Any]]
SIM_TIMEOUT_S = 10.0
# What a simulator's answer may show the screen (receipts go through Dev.GetReceipt only).
_SAFE_RESULT_KEYS = ("ok", "device", "active", "plugged", "silent", "card", "consumed", "sam_fault", "fail_next",
                     "printed_lines", "receipts_printed", "paper_near_end", "paper_out", "cover_open",
                     "cutter_error", "lit", "mode", "key", "joystick", "tamper", "temp_c", "power", "relays",
                     "scanned", "code", "payment", "failing", "captures")


class DevService(Service):
    """See the module docstring."""

    path, interface = "dev", "Dev"
    events = ("Dev.ReceiptPrintedEvent",)

    def __init__(self, actions: Mapping[str, Mapping[str, Action]]) -> None:
        super().__init__()
        self.actions = actions
        self._printed_count: int | None = None
        self.commands.update({
            "Dev.GetActions": self.get_actions,
            "Dev.Simulate": self.simulate,
            "Dev.GetReceipt": self.get_receipt,
            "Common.Capabilities": self.get_capabilities,
        })

    async def get_capabilities(self, _request: Request) -> Reply:
        return Reply(self.capabilities())

    async def get_actions(self, _request: Request) -> Reply:
        return Reply({"devices": {name: sorted(table) for name, table in sorted(self.actions.items())}})

    async def simulate(self, request: Request) -> Reply:
        p = request.payload
        device, action, args = p.get("device"), p.get("action"), p.get("args", [])
        table = self.actions.get(device) if isinstance(device, str) else None
        if table is None:
            known = ", ".join(sorted(self.actions))
            raise CommandError(messages.INVALID_DATA, f"unknown device {device!r}; known: {known}")
        fn = table.get(action) if isinstance(action, str) else None
        if fn is None:
            known = ", ".join(sorted(table))
            raise CommandError(messages.INVALID_DATA, f"{device}: unknown action {action!r}; known: {known}")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args) or len(args) > 16:
            raise CommandError(messages.INVALID_DATA, "args must be an array of at most 16 strings")
        try:
            # Simulator actions may block briefly (pty I/O): off the loop.
            result = await asyncio.wait_for(asyncio.to_thread(fn, list(args)), SIM_TIMEOUT_S)
        except TimeoutError:
            raise CommandError(messages.TIMEOUT, f"{device} {action} did not answer") from None
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise CommandError(messages.INVALID_DATA, f"{device} {action}: {exc.__class__.__name__}: {exc}") from None
        safe = {k: v for k, v in (result or {}).items() if k in _SAFE_RESULT_KEYS}
        return Reply({"device": device, "action": action, "result": safe})

    def _action(self, device: str, action: str) -> Action | None:
        table = self.actions.get(device)
        return table.get(action) if table is not None else None

    def _receipt(self) -> tuple[list[str], int] | None:
        """The last receipt rendered from the ESC/POS bytes the simulated printer received, and the count."""
        render = self._action("printer", "receipt")
        if render is None:
            return None
        answer = render([])
        lines, count = answer.get("lines"), answer.get("receipts_printed")
        if not isinstance(lines, list) or not isinstance(count, int):
            return None
        return [str(line) for line in lines], count

    def _printed(self) -> int | None:
        status = self._action("printer", "status")
        count = status([]).get("receipts_printed") if status is not None else None
        return count if isinstance(count, int) else None

    async def get_receipt(self, _request: Request) -> Reply:
        receipt = self._receipt()
        if receipt is None:
            raise CommandError(messages.UNSUPPORTED_COMMAND, "no simulated printer")
        return Reply({"lines": receipt[0]})

    def opened(self, _peer: Any) -> None:
        if self._printed_count is None:
            self._printed_count = self._printed()

    def refresh(self) -> None:
        count = self._printed()
        if count is None or count == self._printed_count:
            return
        self._printed_count = count
        receipt = self._receipt()
        if receipt is not None:
            self.unsolicited("Dev.ReceiptPrintedEvent", {"lines": receipt[0]})
