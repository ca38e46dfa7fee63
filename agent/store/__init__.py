# SPDX-License-Identifier: Apache-2.0
"""The kiosk's SQLite database: schema, group-commit writer, journal, outbox, salvage."""
