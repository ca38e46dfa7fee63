# SPDX-License-Identifier: Apache-2.0
"""The private PostgreSQL cluster of the back office's tests: ``devtools/pgcluster.py``, which
``make run-backoffice`` uses too. Kept here so ``from pgcluster import PgCluster`` goes on working."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)      # appended: shadows nothing already importable

from devtools.pgcluster import PgCluster, PgClusterError, find_pg_bin, wait_ready  # noqa: E402

__all__ = ["PgCluster", "PgClusterError", "find_pg_bin", "wait_ready"]
