# SPDX-License-Identifier: Apache-2.0
"""The self-test table: what ``kiosk-agent selftest`` prints on a kiosk and ``kioskctl`` from its answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["SelftestRow", "format_table"]


class SelftestRow(Protocol):
    """One device's result (``hal.device.SelftestResult`` is one)."""

    @property
    def device(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def reason(self) -> str: ...


def format_table(results: Sequence[SelftestRow]) -> str:
    width = max([len(r.device) for r in results] + [6])
    lines = [f"{'device':<{width}}  result  reason"]
    for r in results:
        lines.append(f"{r.device:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.reason}".rstrip())
    return "\n".join(lines)
