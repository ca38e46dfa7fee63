# SPDX-License-Identifier: Apache-2.0
"""``kiosk-ledger`` and ``kioskctl kiosks`` as an operator runs them: real processes, a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from corekit import REPO, rows, write_ledger_config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.wire.keyid import key_id
from agent.wire.signing import public_b64, public_raw
from fleet.keys import init_key
from fleet.ledger.schema import SCHEMA_VERSION
from provisioning.slip import render_slip
from provisioning.steps import Answers

KIOSKCTL = str(Path(sys.executable).parent / "kioskctl")


def ledger_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.ledger.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def kioskctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KIOSKCTL, *argv], capture_output=True, text=True, timeout=60)


def test_kioskctl_registers_a_kiosk_from_its_provisioned_public_key_file(dsn: str, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "device-ed25519.pub"          # what kiosk-provision writes beside the key
    pub.write_text(public_b64(key) + "\n")
    result = kioskctl("kiosks", "register", "k-0001", "--fleet", "north", "--public-key", str(pub), "--db", dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "k-0001 (north): registered"
    assert rows(dsn, "SELECT k.fleet, kk.kid, kk.public_key FROM kiosks k JOIN kiosk_keys kk USING (kiosk)") == \
        [("north", key_id(public_raw(key)), public_raw(key))]
    again = kioskctl("kiosks", "register", "k-0001", "--fleet", "north", "--public-key", public_b64(key), "--db", dsn)
    assert again.stdout.strip() == "k-0001 (north): unchanged"
    rotated = Ed25519PrivateKey.generate()
    added = kioskctl("kiosks", "register", "k-0001", "--fleet", "north", "--public-key", public_b64(rotated),
                     "--db", dsn)
    assert added.stdout.strip() == "k-0001 (north): key added"
    assert len(rows(dsn, "SELECT 1 FROM kiosk_keys WHERE kiosk = 'k-0001'")) == 2
    moved = kioskctl("kiosks", "register", "k-0001", "--fleet", "south", "--public-key", public_b64(key), "--db", dsn)
    assert moved.returncode == 2
    assert "registered in fleet 'north', not 'south' (ledger.registration)" in moved.stderr
    bad = kioskctl("kiosks", "register", "k-0002", "--fleet", "north", "--public-key", "bm90IGEga2V5", "--db", dsn)
    assert bad.returncode == 2 and "an Ed25519 public key has 32" in bad.stderr


def test_kiosks_import_reads_commissioning_slips(dsn: str, tmp_path: Path) -> None:
    keys = {f"k-{i:04d}": Ed25519PrivateKey.generate() for i in range(3)}
    slips = []
    for kiosk, key in keys.items():
        answers = Answers(kiosk_id=kiosk, fleet="north", site="Post office", mqtt_url="mqtts://broker:8883")
        text, _qr = render_slip(answers, key, None)
        slips.append(tmp_path / f"{kiosk}-slip.txt")
        slips[-1].write_text(text)
    result = kioskctl("kiosks", "import", "--db", dsn, *map(str, slips))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 and all(line.endswith(": registered")
                                                       for line in result.stdout.splitlines())
    stored = dict(rows(dsn, "SELECT kiosk, public_key FROM kiosk_keys"))
    assert {k: bytes(v) for k, v in stored.items()} == {k: public_raw(key) for k, key in keys.items()}
    # kiosk-ledger has the same command, with its configuration for the database.
    (tmp_path / "junk.txt").write_text("no QR line here\n")
    junk = ledger_cli("kiosks", "import", "--db", dsn, str(tmp_path / "junk.txt"))
    assert junk.returncode == 2 and "no commissioning QR line" in junk.stderr


def test_migrate_and_configuration_errors(pg: object, tmp_path: Path) -> None:
    dsn = pg.create_database("t_cli_migrate")        # type: ignore[attr-defined]
    config = write_ledger_config(tmp_path / "ledger.toml", dsn=dsn, broker_url="mqtt://127.0.0.1:1",
                                 client_id="ledger-1", key_file=tmp_path / "none.key")
    first = ledger_cli("migrate", "--config", str(config))
    assert first.returncode == 0 and first.stdout.strip() == f"schema version 0 -> {SCHEMA_VERSION}"
    assert ledger_cli("migrate", "--db", dsn).stdout.strip() == f"schema version {SCHEMA_VERSION}: up to date"
    # A database a newer kiosk-ledger migrated: refused, nothing changed.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    init_key(tmp_path, "none")
    newer = ledger_cli("serve", "--config", str(config))
    assert newer.returncode == 2 and "newer than this kiosk-ledger knows" in newer.stderr, newer.stderr
    refused = ledger_cli("migrate", "--db", dsn)
    assert refused.returncode == 2 and "(ledger.schema_too_new)" in refused.stderr
    # A broken configuration names the key and exits 78, as kiosk-agent does.
    config.write_text(config.read_text().replace("batch_ms = 10", "batch_ms = 10\nbatch_size = 3"))
    broken = ledger_cli("serve", "--config", str(config))
    assert broken.returncode == 78
    assert "ledger.batch_size: unknown key" in broken.stderr and "(ledger.config)" in broken.stderr
    missing = ledger_cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 78 and "cannot read" in missing.stderr
