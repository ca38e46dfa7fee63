# SPDX-License-Identifier: Apache-2.0
"""``kioskctl unseal`` / ``verify`` / ``evidence-keygen``: the back office's side of a transaction.

    kioskctl evidence-keygen --out backoffice.pem      # prints the kiosk config line
    kioskctl unseal --key backoffice.pem evidence.jsonl --out ./unsealed
    kioskctl unseal --key backoffice.pem --ledger postgresql://reader@db/ledger --tx 3f2a... --out ./unsealed
    kioskctl verify --public-key kiosk.pub tx.jsonl     # per epoch; exit 1 and the first break

Input files are JSON Lines: one payload per line, or the ``{"topic", "payload"}``
objects ``kioskctl watch --json`` prints (other topics are skipped). A bare
JSON document holding one payload works too.

``unseal`` prints each bundle's card record as one JSON line (photos as
their sizes); with ``--out DIR`` it writes ``DIR/<tx>/card.json``,
``photo.wlt``, ``face.jpg`` (when sealed) and ``mailing.json``. These files hold
personal data: they belong on the back office's protected store only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.wire.contract import loads_strict
from agent.wire.sealing import (
    Bundle,
    SealingError,
    X25519PrivateKey,
    key_id,
    load_private_key,
    open_bundle,
    parse_content,
    public_key_b64,
    save_private_key,
)
from fleet.errors import FleetError
from fleet.keys import evidence_snippet

__all__ = ["register", "read_payloads", "read_tx_stream", "unseal_payload", "load_verify_key"]


def read_payloads(path: Path, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, payload)`` for every payload of topic ``*/suffix`` in a capture."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    stripped = text.strip()
    if stripped.startswith("{") and "\n" in stripped:
        try:   # one pretty-printed document rather than JSON Lines
            yield from _select(1, json.loads(stripped), suffix)
            return
        except ValueError:
            pass
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            yield from _select(number, obj, suffix)


def _select(number: int, obj: Any, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(obj, dict) and "topic" in obj and "payload" in obj:
        if str(obj["topic"]).endswith("/" + suffix) and isinstance(obj["payload"], dict):
            yield number, obj["payload"]
    elif isinstance(obj, dict):
        yield number, obj


def unseal_payload(key: X25519PrivateKey, payload: dict[str, Any]) -> dict[str, Any]:
    """Decrypt one ``evidence`` payload; returns the content with photos as bytes."""
    tx = payload.get("tx")
    if not isinstance(tx, str) or not tx:
        raise SealingError("payload has no transaction id")
    plain = open_bundle(key, Bundle.from_dict(payload.get("bundle")), tx)
    content = parse_content(plain)
    if content.get("tx") != tx:
        raise SealingError(f"bundle content names transaction {content.get('tx')!r}, not {tx!r}")
    return content


def _export(out: Path, content: dict[str, Any]) -> Path:
    target = out / str(content["tx"]).replace("/", "_")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(name: str, data: bytes) -> None:
        fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    write("card.json", json.dumps(content["card"], ensure_ascii=False, indent=1).encode("utf-8"))
    write("photo.wlt", content["photo_wlt"])
    if content.get("face_jpeg"):
        write("face.jpg", content["face_jpeg"])
    if content.get("mailing"):
        write("mailing.json", json.dumps(content["mailing"], ensure_ascii=False, indent=1).encode("utf-8"))
    return target


def cmd_unseal(args: argparse.Namespace) -> int:
    try:
        key = load_private_key(args.key)
    except SealingError as exc:
        print(f"kioskctl unseal: {exc}", file=sys.stderr)
        return 2
    if (args.file is None) == (args.ledger is None) or bool(args.tx) != (args.ledger is not None):
        print("kioskctl unseal: give a FILE, or --ledger DSN with --tx ID (one or more)", file=sys.stderr)
        return 2
    ok = bad = 0
    try:
        source = _ledger_payloads(args.ledger, args.tx) if args.ledger else (
            (f"{args.file}:{number}", payload) for number, payload in read_payloads(args.file, "evidence"))
        for where, payload in source:
            if payload is None:
                bad += 1
                print(f"{where}: the ledger holds no evidence for this transaction", file=sys.stderr)
                continue
            try:
                content = unseal_payload(key, payload)
            except (SealingError, ValueError, KeyError) as exc:
                bad += 1
                print(f"{where}: tx {payload.get('tx')}: {exc}", file=sys.stderr)
                continue
            ok += 1
            summary = {"tx": content["tx"], "service": content.get("service"), "card": content["card"],
                       "photo_wlt_bytes": len(content["photo_wlt"]),
                       "face_jpeg_bytes": len(content["face_jpeg"]) if content.get("face_jpeg") else 0,
                       "face_basis": content.get("face_basis"), "mailing": content.get("mailing")}
            if args.out:
                summary["exported"] = str(_export(args.out, content))
            print(json.dumps(summary, ensure_ascii=False), flush=True)
    except (OSError, ValueError, FleetError) as exc:
        print(f"kioskctl unseal: {exc}", file=sys.stderr)
        return 2
    print(f"unsealed {ok} bundle(s), {bad} failed", file=sys.stderr)
    return 0 if bad == 0 and ok > 0 else 1


def _ledger_payloads(dsn: str, ids: list[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """``(where, payload)`` of each transaction's sealed bundle as the ledger stored it (None: it has none)."""
    try:
        from fleet.ledger.db import connect
        from fleet.ledger.report import sealed_evidence
    except ImportError as exc:      # psycopg: the [backoffice] extra, never on a kiosk
        raise ValueError(f"--ledger needs kiosk-agent's [backoffice] extra ({exc})") from None
    with connect(dsn) as conn:
        found = sealed_evidence(conn, ids)
    for tx in ids:
        yield f"ledger tx {tx}", found.get(tx)


def load_verify_key(value: str) -> bytes:
    """A kiosk's Ed25519 public key: a file (PEM public or private key, or base64 line) or the base64 itself."""
    path = Path(value)
    data = path.read_bytes() if path.exists() else value.encode("ascii")
    if b"PRIVATE KEY-----" in data:
        # The kiosk's own signing key (keys/signing.key), e.g. from a kiosk
        # taken back to the office: only its public half is used.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value}: not a readable private key ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{value}: not an Ed25519 key")
        return private.public_key().public_bytes_raw()
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{value}: not an Ed25519 public key")
        return key.public_bytes_raw()
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{value}: expected a PEM public key or the base64 of 32 raw bytes")
    return raw


def read_tx_stream(path: Path) -> list[tuple[int, bytes]]:
    """``(line number, payload bytes)`` of every ``tx`` record in a capture.

    A line that is a record is taken byte for byte (the signature covers
    those bytes); a ``{"topic", "payload"}`` line from ``watch --json`` /
    ``tx tail --json`` is re-encoded canonically, which gives the published
    bytes back because records are canonical JSON (JCS, or the legacy form
    a record without ``canon`` was written in).
    """
    from agent.wire.txformat import encode_record

    raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    out: list[tuple[int, bytes]] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)        # re-encoded below: a duplicate key must not be resolved here
        except ValueError:
            out.append((number, line))      # verify_chain names it: not JSON
            continue
        if isinstance(obj, dict) and "topic" in obj and "payload" in obj:
            if str(obj["topic"]).endswith("/tx"):
                try:
                    out.append((number, encode_record(obj["payload"])))
                except ValueError:
                    out.append((number, line))      # verify_chain names it: no canonical form
        else:
            out.append((number, line.strip()))
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    """Check each epoch's chain; say where an epoch began after a lost store and what it followed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.wire.txformat import verify_epochs
    try:
        public_key = Ed25519PublicKey.from_public_bytes(load_verify_key(args.public_key))
        stream = read_tx_stream(args.file)
    except (OSError, ValueError) as exc:
        print(f"kioskctl verify: {exc}", file=sys.stderr)
        return 2
    if not stream:
        print(f"kioskctl verify: no tx records in {args.file}", file=sys.stderr)
        return 2
    epochs = verify_epochs([payload for _n, payload in stream], public_key, first_seq=args.first_seq, prev=args.prev)
    last_seen = {e.epoch: e.chain.last_seq for e in epochs}
    status = 0
    for part in epochs:
        name = f"epoch {part.epoch}" if part.epoch else "records without an epoch"
        report = part.chain
        if not report.ok:
            index = part.break_index if part.break_index is not None else 0
            line, payload = stream[index] if index < len(stream) else ("?", b"")
            seq = report.break_seq if report.break_seq is not None else _claimed_seq(payload)
            print(f"BROKEN: {args.file}:{line}: record #{index + 1} (seq {seq}): {report.reason}; "
                  f"{report.count} record(s) before it verified (last good seq {report.last_seq}; {name})"
                  f"{_mid_stream_hint(report, seq, args)}")
            status = 1
            continue
        print(f"OK: {report.count} record(s), seq up to {report.last_seq}: signatures valid, "
              f"hash chain intact, no gaps ({name})")
        if part.start is None:
            continue
        prev_epoch, prev_last = part.start.get("prev_epoch"), part.start.get("prev_last_seq")
        how = "exactly" if part.start.get("prev_last_seq_exact") else "at least"
        print(f"EPOCH: {name} began after the kiosk lost its store; previous epoch {prev_epoch or 'unknown'} "
              f"ended at seq {how + ' ' + str(prev_last) if prev_last else 'unknown'}")
        seen = last_seen.get(prev_epoch) if prev_epoch in last_seen else None
        if isinstance(prev_last, int) and seen is not None and seen < prev_last:
            print(f"MISSING: epoch {prev_epoch}: seq {seen + 1}-{prev_last} not in this capture "
                  f"(lost with the store, or never received)")
            status = 1
    return status


def _mid_stream_hint(report: Any, seq: Any, args: argparse.Namespace) -> str:
    """Point at --first-seq / --prev when the capture simply begins after seq 1."""
    if report.count or args.first_seq is not None or args.prev is not None or not isinstance(seq, int) \
            or not str(report.reason).startswith(f"seq {seq}, expected"):
        return ""
    return (f"\nthe capture starts mid-stream at seq {seq}: check it with --first-seq {seq}, and with "
            f"--prev HASH (the SHA-256 of record {seq - 1}) to check its link to what came before")


def _claimed_seq(payload: bytes) -> Any:
    # A record that fails its signature still says which seq it claims to be.
    try:
        return json.loads(payload).get("seq", "?")
    except (ValueError, AttributeError):
        return "?"


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.out.exists():
        print(f"kioskctl evidence-keygen: {args.out} exists; refusing to overwrite a key", file=sys.stderr)
        return 2
    key = X25519PrivateKey.generate()
    save_private_key(key, args.out)
    comment = f"back-office evidence key {key_id(key.public_key().public_bytes_raw())} in {args.out}"
    print(evidence_snippet(public_key_b64(key), comment), end="")
    return 0


def register(sub: Any) -> None:
    unseal = sub.add_parser("unseal", help="decrypt evidence bundles with the back office's private key")
    unseal.add_argument("--key", type=Path, required=True, help="back-office X25519 private key (PEM)")
    unseal.add_argument("--out", type=Path, help="export card.json, photo.wlt, face.jpg, mailing.json per tx")
    unseal.add_argument("file", type=Path, nargs="?",
                        help="JSON Lines of evidence payloads or watch --json lines; - for stdin")
    unseal.add_argument("--ledger", metavar="DSN", help="read the bundles from the ledger's PostgreSQL instead "
                        "(kiosk-ledger's database.dsn; a read replica will do)")
    unseal.add_argument("--tx", action="append", default=[], metavar="ID",
                        help="with --ledger: the transaction whose bundle to open (repeat for more)")
    unseal.set_defaults(func=cmd_unseal)

    verify = sub.add_parser("verify", help="check signatures, hash chain and gapless seq of captured tx records")
    verify.add_argument("--public-key", required=True,
                        help="the kiosk's Ed25519 key: its public key (PEM file, base64 file or base64) or its "
                             "private key file (only the public half is used)")
    verify.add_argument("file", type=Path, help="JSON Lines of tx payloads or watch --json lines; - for stdin")
    verify.add_argument("--first-seq", type=int, help="the capture starts at this seq (default: 1)")
    verify.add_argument("--prev", help="hash the capture continues from (hex), for a tail")
    verify.set_defaults(func=cmd_verify)

    keygen = sub.add_parser("evidence-keygen", help="create the back office's X25519 key for sealed evidence")
    keygen.add_argument("--out", type=Path, required=True, help="private key file to create (PEM, 0600)")
    keygen.set_defaults(func=cmd_keygen)
