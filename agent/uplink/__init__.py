# SPDX-License-Identifier: Apache-2.0
"""The one MQTT 5 connection, driven from the event loop."""
