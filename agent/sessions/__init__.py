# SPDX-License-Identifier: Apache-2.0
"""Citizen sessions: the engine, its device edges, the service catalogue, sealed evidence."""
