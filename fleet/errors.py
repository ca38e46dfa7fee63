# SPDX-License-Identifier: Apache-2.0
"""The fleet side's exception tree: one root, ``FleetError``.

Each class carries a stable string ``code`` (as ``HalError`` and
``AgentError`` do), which kioskctl prints with the message, so a script
around it can match on the code rather than the text.

    try:
        client.connect()
    except FleetError as exc:
        print(f"kioskctl: {exc} ({exc.code})")
"""

from __future__ import annotations

__all__ = ["FleetError", "BrokerError", "KeyFileError", "CaError"]


class FleetError(Exception):
    """Root of every error the fleet tools raise."""

    code = "fleet.error"


class BrokerError(FleetError):
    """kioskctl could not talk to the broker (bad URL, unreachable, refused)."""

    code = "fleet.broker"


class KeyFileError(FleetError):
    """A key file is missing, unreadable, or not an Ed25519 private key; or a key id is malformed."""

    code = "fleet.key"


class CaError(FleetError):
    """The CA is missing or unreadable, or a CSR / bundle was refused; the message says why."""

    code = "fleet.ca"
