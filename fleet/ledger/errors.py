# SPDX-License-Identifier: Apache-2.0
"""The ledger's errors: each a ``FleetError`` with a stable ``code``.

``kiosk-ledger`` prints ``message (code)`` and exits 2 for a usage or
database problem, 78 for a configuration error (as ``kiosk-agent`` does).
"""

from __future__ import annotations

from fleet.errors import FleetError

__all__ = ["LedgerError", "LedgerConfigError", "SchemaTooNew", "LedgerDatabaseError", "RegistrationError"]


class LedgerError(FleetError):
    """Root of the ledger's errors."""

    code = "ledger.error"


class LedgerConfigError(LedgerError):
    """The ledger's TOML is missing, unreadable or wrong; the message names the key."""

    code = "ledger.config"


class SchemaTooNew(LedgerError):
    """The database was migrated by a newer kiosk-ledger than this one; nothing was changed."""

    code = "ledger.schema_too_new"


class LedgerDatabaseError(LedgerError):
    """PostgreSQL could not be reached or refused a statement."""

    code = "ledger.database"


class RegistrationError(LedgerError):
    """A kiosk's registration (id, fleet, public signing key) is malformed or conflicts with one on file."""

    code = "ledger.registration"
