# SPDX-License-Identifier: Apache-2.0
"""kiosk-agent: the daemon that runs an unattended self-service kiosk."""

__version__ = "0.1.0"
