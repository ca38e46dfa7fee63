# SPDX-License-Identifier: Apache-2.0
"""Developer tools run from a checkout, never installed: ``make run-backoffice`` and the private PostgreSQL
cluster it shares with the back office's tests and benches."""
