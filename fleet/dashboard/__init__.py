# SPDX-License-Identifier: Apache-2.0
"""The fleet manager's dashboard (``kiosk-ledger dashboard``): reads the ledger's database; never on a kiosk."""
