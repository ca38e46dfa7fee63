# SPDX-License-Identifier: Apache-2.0
"""Provisioning errors: each with a stable ``code`` (the installer's guide lists them)."""

from __future__ import annotations

from agent.errors import AgentError

__all__ = [
    "AnswerError",
    "EnrolError",
    "InstallError",
    "KeyProblem",
    "ProvisionError",
    "SelftestFailed",
    "SystemCheckFailed",
]


class ProvisionError(AgentError):
    """Root of kiosk-provision's errors."""

    code = "provision.error"


class AnswerError(ProvisionError):
    """A flag or answer-file value is missing or invalid; the message names it."""

    code = "provision.answer"


class SystemCheckFailed(ProvisionError):
    """The board cannot run the agent (e.g. Python older than 3.11)."""

    code = "provision.system"


class KeyProblem(ProvisionError):
    """A key file exists but cannot be read, or is of the wrong type."""

    code = "provision.keys"


class EnrolError(ProvisionError):
    """The certificate bundle does not fit this kiosk (other key, other id, expired, bad CA)."""

    code = "provision.enrol"


class InstallError(ProvisionError):
    """A file could not be installed, or a system command failed."""

    code = "provision.install"


class SelftestFailed(ProvisionError):
    """``kiosk-agent selftest`` reported a failed peripheral."""

    code = "provision.selftest"
