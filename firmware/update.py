# SPDX-License-Identifier: Apache-2.0
"""Firmware update on the device: A/B slots, a boot record, trial and rollback.

Flash layout (paths relative to the filesystem root, which is the working
directory on the Pico and on the unix port)::

    main.py        the loader (installed once with mpremote, never updated)
    boot.json      {"active": "a", "pending": null, "tries": 0, "cause": null, "confirm_s": 60}
    app_a/ app_b/  one firmware image each: app.py, board.py, ..., lib/link.py
    fw.tmp         the image being received

An image is an archive: ``b"KFW1"`` then entries ``name_len:u16 | name |
size:u32 | data`` (big-endian). ``FW_BEGIN`` gives its size and SHA-256,
chunks arrive in order into ``fw.tmp``, ``FW_COMMIT`` checks the digest,
unpacks into the inactive slot and only then writes ``pending`` into the
boot record (atomically, by rename). Until that rename nothing the loader
reads has changed, so an interrupted transfer leaves the old version.

    up = Updater(active="a")
    up.begin(size, sha256_hex, "1.1.0", 60)
    up.chunk(0, data)
    up.commit()        # then reset; the loader boots app_b on trial
"""

import hashlib
import os

try:
    import binascii
except ImportError:  # pragma: no cover - both runtimes have it
    binascii = None  # type: ignore

RECORD = "boot.json"
TMP_IMAGE = "fw.tmp"
MAGIC = b"KFW1"
MAX_IMAGE = 512 * 1024


class UpdateError(ValueError):
    """An update step failed; ``code`` goes back to the agent in the ack."""

    code = "update.error"

    def __init__(self, code):
        ValueError.__init__(self, code)
        self.code = code


def _json():
    import json
    return json


def read_record():
    """The boot record, or the factory default when missing or unreadable."""
    rec = {"active": "a", "pending": None, "tries": 0, "cause": None, "confirm_s": 60}
    try:
        with open(RECORD) as f:
            got = _json().loads(f.read())
        if isinstance(got, dict) and got.get("active") in ("a", "b"):
            for k in rec:
                if k in got:
                    rec[k] = got[k]
    except (OSError, ValueError):
        pass
    return rec


def write_record(rec):
    """Replace the boot record atomically (write, then rename over)."""
    tmp = RECORD + ".tmp"
    with open(tmp, "w") as f:
        f.write(_json().dumps(rec))
    os.rename(tmp, RECORD)


def confirm(slot):
    """The image in ``slot`` said hello: make it the active one."""
    rec = read_record()
    if rec.get("pending") == slot:
        rec["active"] = slot
        rec["pending"] = None
        rec["tries"] = 0
        rec["cause"] = "update"
        write_record(rec)
        return True
    return False


def note_cause(cause):
    """Remember why we are about to reset, for the next hello."""
    rec = read_record()
    rec["cause"] = cause
    write_record(rec)


def take_cause():
    """The recorded cause of the last deliberate reset, cleared on read."""
    rec = read_record()
    cause = rec.get("cause")
    if cause:
        rec["cause"] = None
        write_record(rec)
    return cause


def _is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def _rmtree(path):
    if not _is_dir(path):
        return
    for name in os.listdir(path):
        full = path + "/" + name
        if _is_dir(full):
            _rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def _hex(digest):
    return binascii.hexlify(digest).decode()


class Updater:
    """Receives an image over the link and installs it into the other slot."""

    def __init__(self, active):
        self.active = active
        self._f = None
        self._hash = None
        self.size = 0
        self.got = 0
        self.sha256 = ""
        self.version = ""
        self.confirm_s = 60

    @property
    def target(self):
        return "b" if self.active == "a" else "a"

    def begin(self, size, sha256, version, confirm_s=60):
        if not isinstance(size, int) or not 8 <= size <= MAX_IMAGE:
            raise UpdateError("size")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise UpdateError("digest")
        if not isinstance(confirm_s, int) or not 5 <= confirm_s <= 3600:
            raise UpdateError("confirm_s")
        self.abort()
        # Held open across chunks: one open per transfer, not per chunk.
        self._f = open(TMP_IMAGE, "wb")  # noqa: SIM115
        self._hash = hashlib.sha256()
        self.size = size
        self.got = 0
        self.sha256 = sha256.lower()
        self.version = str(version)
        self.confirm_s = confirm_s

    def abort(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        self._hash = None

    def chunk(self, offset, data):
        if self._f is None or self._hash is None:
            raise UpdateError("not_started")
        if offset != self.got:
            raise UpdateError("offset")
        if self.got + len(data) > self.size:
            raise UpdateError("overflow")
        self._f.write(data)
        self._hash.update(data)
        self.got += len(data)

    def commit(self):
        """Verify, unpack into the other slot, mark it pending. Return the slot."""
        if self._f is None or self._hash is None:
            raise UpdateError("not_started")
        if self.got != self.size:
            self.abort()
            raise UpdateError("incomplete")
        digest = _hex(self._hash.digest())
        self.abort()
        if digest != self.sha256:
            raise UpdateError("digest_mismatch")
        slot = self.target
        unpack(TMP_IMAGE, "app_" + slot)
        rec = read_record()
        rec["pending"] = slot
        rec["tries"] = 0
        rec["confirm_s"] = self.confirm_s
        write_record(rec)
        try:
            os.remove(TMP_IMAGE)
        except OSError:
            pass
        return slot

    def progress(self):
        return {"size": self.size, "got": self.got, "version": self.version}


def _read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) != n:
        raise UpdateError("truncated")
    return data


def _safe_name(name):
    if not name or name.startswith("/") or "\\" in name or len(name) > 64:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def unpack(image_path, dest):
    """Unpack the archive at ``image_path`` into the directory ``dest``."""
    _rmtree(dest)
    os.mkdir(dest)
    made = {dest}
    with open(image_path, "rb") as f:
        if _read_exact(f, 4) != MAGIC:
            raise UpdateError("magic")
        while True:
            head = f.read(2)
            if not head:
                break
            if len(head) != 2:
                raise UpdateError("truncated")
            name = _read_exact(f, (head[0] << 8) | head[1]).decode()
            if not _safe_name(name):
                raise UpdateError("name")
            sz = _read_exact(f, 4)
            size = (sz[0] << 24) | (sz[1] << 16) | (sz[2] << 8) | sz[3]
            parts = name.split("/")
            path = dest
            for part in parts[:-1]:
                path = path + "/" + part
                if path not in made:
                    if not _is_dir(path):
                        os.mkdir(path)
                    made.add(path)
            with open(dest + "/" + name, "wb") as out:
                left = size
                while left:
                    piece = _read_exact(f, min(left, 512))
                    out.write(piece)
                    left -= len(piece)
