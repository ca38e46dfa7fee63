# SPDX-License-Identifier: Apache-2.0
"""The daemon's lifecycle: components, peripherals, health, alarms, self-test, sd_notify, device key."""
