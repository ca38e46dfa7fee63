# SPDX-License-Identifier: Apache-2.0
"""Static files of the reference kiosk UI (``agent/localapi/ui/``), for plain HTTP GETs.

Only files below the UI directory are served: the URL path is decoded once,
and a path with ``..``, a backslash, a NUL, a hidden segment or a symlink
leading out of the directory is 404, as is a directory (no listing; ``/``
is ``index.html``). Versioned vendor files (``vendor/<pkg>@<version>/``)
are cached for a year; everything else is revalidated (``no-cache`` with an
ETag), so an agent upgrade shows its new screens at the next load.

    found = StaticFiles(ui_dir).get("/css/kiosk.css", if_none_match=None)
    found.status, found.headers, found.body
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from urllib.parse import unquote

__all__ = ["StaticFiles", "StaticResponse", "CONTENT_TYPES", "SECURITY_HEADERS"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}

# The page's URL carries the API token: no Referer may ever leave with it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                "connect-src 'self' ws://127.0.0.1:* ws://localhost:*; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"),
}
MAX_FILE_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class StaticResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def _plain(status: int, reason: str, text: str) -> StaticResponse:
    return StaticResponse(status, reason, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
                                           **SECURITY_HEADERS}, text.encode())


class StaticFiles:
    """Serves files below ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, url_path: str) -> Path | None:
        """The file ``url_path`` names below the root, or None."""
        path = url_path.split("?", 1)[0].split("#", 1)[0]
        try:
            path = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if not path.startswith("/") or "\\" in path or "\x00" in path:
            return None
        if path == "/":
            path = "/index.html"
        parts = path[1:].split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real

    def get(self, url_path: str, *, if_none_match: str | None = None) -> StaticResponse:
        real = self.resolve(url_path)
        if real is None:
            return _plain(404, "Not Found", "not found\n")
        try:
            stat = real.stat()
            if stat.st_size > MAX_FILE_BYTES:
                return _plain(404, "Not Found", "not found\n")
            body = real.read_bytes()
        except OSError:
            return _plain(404, "Not Found", "not found\n")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        relative = real.relative_to(self.root).as_posix()
        immutable = relative.startswith("vendor/") and "@" in relative.split("/")[1]
        headers = {"Content-Type": CONTENT_TYPES.get(real.suffix.lower(), "application/octet-stream"),
                   "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
                   "ETag": etag, **SECURITY_HEADERS}
        if if_none_match is not None and etag in [tag.strip() for tag in if_none_match.split(",")]:
            return StaticResponse(304, "Not Modified", headers, b"")
        return StaticResponse(200, "OK", headers, body)
