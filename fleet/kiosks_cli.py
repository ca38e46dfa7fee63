# SPDX-License-Identifier: Apache-2.0
"""``kioskctl kiosks register|import``: tell the ledger a kiosk's public signing key.

    kioskctl kiosks register k-0001 --fleet north --public-key device-ed25519.pub --db postgresql://...
    kioskctl kiosks import --db postgresql://... commissioning-slip.txt

The key comes from provisioning: the kiosk's ``device-ed25519.pub`` or the
commissioning slip's QR line. The database code (psycopg, the ``backoffice``
extra) is loaded only when one of these runs, so kioskctl works without it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    try:
        from fleet.ledger.cli import run
    except ImportError as exc:
        print(f"kioskctl: the ledger needs the backoffice extra (pip install 'kiosk-agent[backoffice]'): {exc}",
              file=sys.stderr)
        return 2
    return run(args.kiosks_func, args, "kioskctl")


def register(sub: Any) -> None:
    try:
        from fleet.ledger.cli import add_kiosks_commands
    except ImportError:
        return      # without the backoffice extra kioskctl has no ledger commands
    for parser in add_kiosks_commands(sub, with_config=False):
        parser.set_defaults(kiosks_func=parser.get_default("func"), func=_run)
