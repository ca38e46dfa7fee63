# SPDX-License-Identifier: Apache-2.0
"""The wire contract: topics, envelopes, schemas (contract), canonical JSON (canonical), key ids (keyid),
signing, sealing, the tx record format and its chain verification (txformat), the self-test table (selftest).

The only part of ``agent`` that fleet/ and provisioning/ import (with agent.config and agent.errors).
"""
