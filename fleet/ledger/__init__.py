# SPDX-License-Identifier: Apache-2.0
"""kiosk-ledger: the back office's ledger (the [backoffice] extra; never on a kiosk)."""
