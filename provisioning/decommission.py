# SPDX-License-Identifier: Apache-2.0
"""``kiosk-provision decommission``: erase keys and citizen data, say what was removed.

    removed = decommission(Layout(Path("/")))     # stops the service first on a kiosk

ETSI EN 303 645 5.11-1: a simple erase of all user data, keys included.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

from provisioning.layout import RENEW_TIMER, UNIT_NAME, Layout
from provisioning.steps import _run, _systemd_running

__all__ = ["decommission"]


def decommission(lay: Layout, out: TextIO | None = None, *, everything: bool = False) -> list[Path]:
    """Stop the service, erase keys and citizen data (storage dir); return what was removed."""
    out = out or sys.stdout
    removed: list[Path] = []
    if not lay.staging and _systemd_running():
        _run(["systemctl", "disable", "--now", UNIT_NAME, RENEW_TIMER])
        print(f"stopped and disabled {UNIT_NAME} and {RENEW_TIMER}", file=out)
    for wants in (lay.wants, lay.renew_wants):
        if wants.is_symlink():
            wants.unlink()
            removed.append(wants)
    if lay.keys.exists():
        for path in sorted(lay.keys.iterdir()):
            _erase(path)
            removed.append(path)
    if lay.storage.exists():
        # agent.db (+ -wal, -shm): journal, outbox, nonces; evidence/: sealed bundles.
        for path in sorted(lay.storage.iterdir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                _erase(path)
            removed.append(path)
    if everything:
        for path in (lay.config, lay.config.with_name("agent.toml.prev"), lay.slip, lay.unit, lay.renew_service,
                     lay.renew_timer, lay.tmpfiles, lay.udev, lay.polkit, lay.log):
            if path.exists():
                path.unlink()
                removed.append(path)
    for path in removed:
        print(f"removed {lay.target(path)}", file=out)
    if not removed:
        print("nothing to remove", file=out)
    return removed


def _erase(path: Path) -> None:
    # Overwrite small files (keys) before unlinking; on flash this is best
    # effort (wear levelling keeps old blocks), which docs/installing.md says.
    try:
        size = path.stat().st_size
        if path.is_file() and size <= 1 << 20:
            with open(path, "r+b") as f:
                f.write(b"\0" * size)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        pass
    path.unlink()
