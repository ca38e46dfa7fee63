# SPDX-License-Identifier: Apache-2.0
"""The wire contract: topics, envelopes, schemas, signing, sealing. The only part fleet/ and provisioning/ import."""
