# SPDX-License-Identifier: Apache-2.0
"""The agent's exception tree: one root, each class with a stable ``code``."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises."""

    code = "agent.error"


class ConfigError(AgentError):
    """The configuration is invalid; the message names the key.

    >>> str(ConfigError("mqtt.keepalive", "abc", "an integer from 5 to 3600"))
    "mqtt.keepalive: got 'abc', expected an integer from 5 to 3600"
    """

    code = "agent.config.invalid"

    def __init__(self, key: str, value: object, expected: str, *, problem: str | None = None) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        got = problem or f"got {value!r}"
        super().__init__(f"{key}: {got}, expected {expected}")


class NotConnected(AgentError):
    """The MQTT uplink is not connected; the publish was not sent."""

    code = "agent.uplink.not_connected"


class PublishRefused(AgentError):
    """The broker answered a publish with a reason code of 0x80 or more."""

    code = "agent.uplink.refused"

    def __init__(self, reason_code: int, reason: str = "") -> None:
        self.reason_code = reason_code
        super().__init__(f"broker refused publish: 0x{reason_code:02x} {reason}".rstrip())


class StoreError(AgentError):
    """The local database could not be used."""

    code = "agent.store.error"


class StoreFull(StoreError):
    """The outbox is over its size limit or the disk is below its watermark."""

    code = "agent.store.full"
