# SPDX-License-Identifier: Apache-2.0
"""The local device API the kiosk screen talks to (XFS4IoT-shaped WebSocket on loopback)."""
