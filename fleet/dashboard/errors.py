# SPDX-License-Identifier: Apache-2.0
"""The dashboard's errors: each a ``FleetError`` with the stable ``code`` and HTTP status the API answers.

The API turns any of them into ``{"error": {"code": ..., "message": ...}}``
with ``status`` (docs/dashboard-api.md lists the codes).
"""

from __future__ import annotations

from fleet.errors import FleetError

__all__ = ["DashboardError", "AuthRequired", "AuthForbidden", "AuthCsrf", "AuthLocked", "AuthFailed",
           "RequestInvalid", "NotFound", "KioskUnknown", "AlarmUnknown", "AlarmAlreadyAcked", "DbUnavailable",
           "UserError"]


class DashboardError(FleetError):
    """Root of the dashboard's errors."""

    code = "dashboard.error"
    status = 500


class AuthRequired(DashboardError):
    """No valid session (none, expired, ended, or its user disabled)."""

    code = "auth.required"
    status = 401


class AuthFailed(DashboardError):
    """Wrong user name or password: one message for both, so it does not tell which users exist."""

    code = "auth.required"
    status = 401


class AuthForbidden(DashboardError):
    """The session's role may not do this."""

    code = "auth.forbidden"
    status = 403


class AuthCsrf(DashboardError):
    """A POST without the session's CSRF token, or from another origin."""

    code = "auth.csrf"
    status = 403


class AuthLocked(DashboardError):
    """Five failed logins in a row: the account waits a few minutes."""

    code = "auth.locked"
    status = 429


class RequestInvalid(DashboardError):
    """A parameter or body the API cannot use; the message says which and why."""

    code = "request.invalid"
    status = 400


class NotFound(DashboardError):
    """No such API path."""

    code = "request.not_found"
    status = 404


class KioskUnknown(DashboardError):
    """Neither registered with the ledger nor ever heard from."""

    code = "kiosk.unknown"
    status = 404


class AlarmUnknown(DashboardError):
    """No alarm episode of that kiosk, code and raise time."""

    code = "alarm.unknown"
    status = 404


class AlarmAlreadyAcked(DashboardError):
    """Someone acknowledged this episode already (the answer says who)."""

    code = "alarm.already_acked"
    status = 409


class DbUnavailable(DashboardError):
    """PostgreSQL cannot be reached just now; the dashboard keeps running and retries."""

    code = "db.unavailable"
    status = 503


class UserError(DashboardError):
    """``kiosk-ledger users``: a bad name, role or password, or no such user."""

    code = "dashboard.user"
    status = 400
