# SPDX-License-Identifier: Apache-2.0
"""The local API's token: fresh at every start, in a file only the kiosk screen's group can read.

    write_token(Path("/run/kiosk-agent/local-api.token"), secrets.token_urlsafe(32), group="kiosk-ui")
    token_matches(token, offered)          # constant-time

The file is written beside itself and renamed into place (a reader never
sees half a token), mode 0640, its group the kiosk browser's when that group
exists (provisioning creates it); otherwise the agent's own, so only the
agent's user reads it.
"""

from __future__ import annotations

import grp
import hmac
import logging
import os
from pathlib import Path

__all__ = ["write_token", "token_matches", "offered_token"]

log = logging.getLogger(__name__)

TOKEN_MODE = 0o640


def write_token(path: Path, token: str, *, group: str) -> None:
    """Write ``token`` to ``path`` (0640, group ``group`` if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode("ascii") + b"\n")
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            gid = None
            log.debug("local_api.ui_group %r does not exist: the token file keeps the agent's group", group)
        if gid is not None:
            try:
                os.fchown(fd, -1, gid)
            except PermissionError:
                log.warning("local_api.ui_group %r: cannot give the token file that group (not a member)", group)
        os.fchmod(fd, TOKEN_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def token_matches(expected: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(expected.encode(), offered.encode())


def offered_token(query: dict[str, list[str]], authorization: str | None) -> str | None:
    """The token a WebSocket upgrade carries: ``?token=`` or ``Authorization: Bearer``."""
    values = query.get("token")
    if values:
        return values[0]
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
