# SPDX-License-Identifier: Apache-2.0
"""The ledger's PostgreSQL schema: a ladder of migrations and the version it reached.

    migrate(conn)            # runs the steps the database lacks, in one transaction

``MIGRATIONS[n - 1]`` takes the database from version ``n - 1`` to ``n``; a
released step is never edited, a change is a new step at the end. The
version is the highest row of ``schema_version``. A database newer than this
code (a rolled-back ledger) is refused with ``SchemaTooNew`` before anything
is written. Workers starting together serialise on an advisory lock, so
each step runs once.

Tables (version 1):

- ``kiosks`` / ``kiosk_keys``: who may publish, and with which Ed25519 keys
  (``kid`` = ``agent.wire.keyid.key_id``).
- ``tx``: every verified record, its payload byte for byte; ``linked_at``
  NULL while its predecessor has not arrived (pending); ``acked_at`` NULL
  while a ``tx/ack`` naming it is due.
- ``epochs``: each journal epoch of a kiosk, with what a new one said it
  followed after a lost store.
- ``evidence``: sealed bundles as received (the ledger holds no private key).
- ``quarantine``: what failed verification, with a stable reason code.

Version 2 adds ``gaps``; version 3 the dashboard's history (``kiosk_status``,
``state_history``, ``health_history``, ``alarm_history``, ``cmd_results``)
and its ``dashboard_users``, ``dashboard_sessions`` and ``audit``; version 4
``alarm_state`` (the newest message of each kiosk's alarm, for the history worker);
version 5 has the BRIN indexes summarise new block ranges at once (``autosummarize``).
"""

from __future__ import annotations

from typing import Any

from fleet.ledger.errors import SchemaTooNew

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "current_version", "MIGRATION_LOCK"]

# pg_advisory_xact_lock key for migrations ("kiosk-ledger" in ASCII, truncated to fit a bigint).
MIGRATION_LOCK = 0x6B696F736B6C6564

_STEP_1 = """
CREATE TABLE kiosks (
    kiosk         text PRIMARY KEY,
    fleet         text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    source        text NOT NULL DEFAULT ''
);
CREATE TABLE kiosk_keys (
    kiosk      text NOT NULL REFERENCES kiosks ON DELETE CASCADE,
    kid        text NOT NULL,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, kid)
);
CREATE TABLE tx (
    kiosk        text NOT NULL,
    epoch        text NOT NULL,
    seq          bigint NOT NULL,
    id           text NOT NULL,
    fleet        text NOT NULL,
    hash         text NOT NULL,
    prev         text NOT NULL,
    kid          text NOT NULL,
    ts_ms        bigint NOT NULL,
    kind         text NOT NULL,
    has_evidence boolean NOT NULL,
    payload      bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    linked_at    timestamptz,
    skipped      bigint NOT NULL DEFAULT 0,
    acked_at     timestamptz,
    PRIMARY KEY (kiosk, epoch, seq),
    UNIQUE (kiosk, id)
);
CREATE INDEX tx_by_hash ON tx (kiosk, hash);
CREATE INDEX tx_pending ON tx (kiosk, prev) WHERE linked_at IS NULL;
CREATE INDEX tx_ack_due ON tx (fleet, kiosk) WHERE linked_at IS NOT NULL AND acked_at IS NULL;
CREATE TABLE epochs (
    kiosk               text NOT NULL,
    epoch               text NOT NULL,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    reason              text,
    prev_epoch          text,
    prev_last_seq       bigint,
    prev_last_seq_exact boolean,
    PRIMARY KEY (kiosk, epoch)
);
CREATE TABLE evidence (
    kiosk       text NOT NULL,
    tx_id       text NOT NULL,
    fleet       text NOT NULL,
    seq         bigint,
    sha256      text NOT NULL,
    payload     bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, tx_id)
);
CREATE TABLE quarantine (
    qid         bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    fleet       text,
    kiosk       text,
    kind        text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    record_id   text,
    epoch       text,
    seq         bigint,
    sha256      text NOT NULL,
    payload     bytea NOT NULL,
    UNIQUE (topic, sha256, reason)
);
CREATE INDEX quarantine_by_kiosk ON quarantine (kiosk, received_at);
"""

# Version 2 (ledger-ops): gaps (fleet/ledger/gaps.py), one row per run of missing seqs below a pending record,
# keyed by the seq before that record; closed "filled" when the records came, "lost" when the kiosk no longer
# has them. And the index export reads by.
_STEP_2_GAPS = """
CREATE TABLE gaps (
    kiosk        text NOT NULL,
    epoch        text NOT NULL,
    to_seq       bigint NOT NULL,
    from_seq     bigint NOT NULL,
    seen_at      timestamptz NOT NULL,
    raised_at    timestamptz,
    requested_at timestamptz,
    requests     integer NOT NULL DEFAULT 0,
    closed_at    timestamptz,
    outcome      text,
    detail       text,
    kind         text NOT NULL DEFAULT 'tx',     -- 'tx': records missing; 'evidence': a stored record's bundle
    PRIMARY KEY (kiosk, epoch, to_seq)
);
CREATE INDEX gaps_open ON gaps (kiosk) WHERE closed_at IS NULL;
-- kiosk-ledger export --since: rows arrive in received_at order, so a BRIN index (a few pages, next to
-- nothing per insert) lets an export read the recent end of tx, not all of it.
CREATE INDEX tx_received_brin ON tx USING brin (received_at);
"""

# Version 3 (the fleet dashboard, issue 17): what kiosks say besides their transactions, kept with a
# retention by fleet/ledger/history.py, and the dashboard's own users, sessions and audit trail
# (fleet/dashboard/). Times are the kiosk's (payload ``ts``) where a kiosk said when; ``received_at`` is
# the ledger's. Payloads are stored as parsed JSON: none of these topics carries citizen data.
_STEP_3_HISTORY = """
CREATE TABLE kiosk_status (
    kiosk         text PRIMARY KEY,
    fleet         text NOT NULL,
    site          text,
    online        boolean,
    online_since  timestamptz,         -- when ``online`` last changed
    bd_seq        bigint,              -- of the birth or Will that set ``online``
    mode          text,
    versions      jsonb,
    peripherals   jsonb,               -- the state's inventory
    health        jsonb,               -- the newest health payload
    health_at     timestamptz,
    active_alarms jsonb NOT NULL DEFAULT '[]',   -- [{code, severity, since}] of the open alarm episodes
    last_seen     timestamptz NOT NULL,          -- newest message of any kind
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kiosk_status_fleet ON kiosk_status (fleet, site);
CREATE TABLE state_history (
    kiosk       text NOT NULL,
    fleet       text NOT NULL,
    ts          timestamptz NOT NULL,
    online      boolean NOT NULL,
    bd_seq      bigint NOT NULL,
    reason      text,
    mode        text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, bd_seq, online)
);
CREATE INDEX state_history_by_time ON state_history (kiosk, ts);
CREATE TABLE health_history (
    kiosk           text NOT NULL,
    fleet           text NOT NULL,
    ts              timestamptz NOT NULL,
    mode            text,
    disk_free_mb    double precision,
    cpu_temp_c      double precision,
    outbox_backlog  bigint,            -- outbox.tx.unacked
    connects        bigint,            -- agent.connects (uplink reconnects are its increments)
    rss_mb          double precision,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, ts)
);
CREATE INDEX health_history_brin ON health_history USING brin (ts);
-- One row per alarm episode: raised opens it, the clear closes it (duration = cleared_at - raised_at).
CREATE TABLE alarm_history (
    kiosk       text NOT NULL,
    fleet       text NOT NULL,
    code        text NOT NULL,
    raised_at   timestamptz NOT NULL,  -- the alarm's ``since`` when it became active
    cleared_at  timestamptz,           -- NULL while open
    severity    text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    device      text,
    latched     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    acked_by    text,                  -- a dashboard user; see audit
    acked_at    timestamptz,
    ack_note    text,
    PRIMARY KEY (kiosk, code, raised_at)
);
CREATE INDEX alarm_history_open ON alarm_history (raised_at) WHERE cleared_at IS NULL;
CREATE TABLE cmd_results (
    kiosk       text NOT NULL,
    fleet       text NOT NULL,
    name        text NOT NULL,
    correlation text NOT NULL DEFAULT '',
    status      text NOT NULL,
    code        text,
    message     text,
    result      jsonb,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, correlation, name, status, ts)
);
CREATE INDEX cmd_results_by_time ON cmd_results (kiosk, ts);
CREATE TABLE dashboard_users (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,       -- argon2id (argon2-cffi)
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until  timestamptz
);
CREATE TABLE dashboard_sessions (
    token_sha256 text PRIMARY KEY,     -- the cookie holds the token; the table only its hash
    username     text NOT NULL REFERENCES dashboard_users ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE TABLE audit (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    username  text NOT NULL,
    action    text NOT NULL,           -- login, login_failed, logout, alarm_ack, user_add, ...
    target    text NOT NULL DEFAULT '',
    detail    jsonb NOT NULL DEFAULT '{}',
    remote    text NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_time ON audit (at);
"""

# Version 4 (history, issue 17): the newest alarm/{code} message of each kiosk, by the kiosk's ``ts`` (what the
# broker retains). Workers of a shared subscription may receive a kiosk's raise after its clear; the raise then
# finds here that a newer message already said the alarm cleared, and its episode is stored closed.
_STEP_4_ALARM_STATE = """
CREATE TABLE alarm_state (
    kiosk   text NOT NULL,
    code    text NOT NULL,
    active  boolean NOT NULL,
    since   timestamptz NOT NULL,      -- the message's ``since``: raised at, or cleared at
    ts      timestamptz NOT NULL,      -- the message's ``ts``: a message older than this changes nothing
    PRIMARY KEY (kiosk, code)
);
"""

# Version 5 (the dashboard, issue 17): BRIN indexes summarise each block range as soon as the next one starts
# filling, instead of at the next VACUUM. An insert-only table is vacuumed only after it grew by a fifth, and
# until then every unsummarised range matches every query: "transactions today" (fleet/dashboard/queries.py)
# and ``export --since`` read the whole unsummarised tail (measured: 124 ms -> 1.6 ms for the last 5 minutes of
# 300,000 rows). Storage parameters only: no rewrite, nothing added to an insert.
_STEP_5_BRIN_AUTOSUMMARIZE = """
ALTER INDEX tx_received_brin SET (autosummarize = on);
ALTER INDEX health_history_brin SET (autosummarize = on);
"""

MIGRATIONS: list[str] = [_STEP_1, _STEP_2_GAPS, _STEP_3_HISTORY, _STEP_4_ALARM_STATE, _STEP_5_BRIN_AUTOSUMMARIZE]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Any) -> int:
    """The database's schema version; 0 for an empty database."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Any, *, target: int | None = None) -> tuple[int, int]:
    """Bring the database to ``target`` (default: this code's version); returns (before, after).

    ``conn`` is a psycopg connection; everything runs in one transaction, so
    a failure leaves the old version whole.
    """
    target = SCHEMA_VERSION if target is None else target
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        before = current_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaTooNew(f"the database is at schema version {before}, newer than this kiosk-ledger knows "
                               f"({SCHEMA_VERSION}); upgrade kiosk-ledger (nothing was changed)")
        if before == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
        for version in range(before + 1, target + 1):
            conn.execute(MIGRATIONS[version - 1])
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return before, max(before, target)
