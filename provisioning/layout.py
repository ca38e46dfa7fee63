# SPDX-License-Identifier: Apache-2.0
"""Where kiosk-provision puts things, on a kiosk (root ``/``) or under a staging root.

    lay = Layout(Path("/tmp/stage"))
    lay.config           # /tmp/stage/etc/kiosk-agent/agent.toml
    lay.target(lay.config)   # /etc/kiosk-agent/agent.toml (the path on the kiosk)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

__all__ = ["SERVICE_USER", "UNIT_NAME", "Layout"]

SERVICE_USER = "kiosk-agent"
UNIT_NAME = "kiosk-agent.service"
RENEW_SERVICE = "kiosk-agent-renew.service"
RENEW_TIMER = "kiosk-agent-renew.timer"
# The shipped unit, tmpfiles entry and udev rules: the checkout's systemd/,
# or where setup.cfg's data_files put them in an installed venv.
_SHIPPED = (Path(__file__).resolve().parent.parent / "systemd",
            Path(sys.prefix) / "share" / "kiosk-agent" / "systemd")


@dataclasses.dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def p(self, target: str) -> Path:
        """``target`` (absolute, as on the kiosk) under the root."""
        return self.root / target.lstrip("/")

    def target(self, staged: Path) -> Path:
        """The kiosk path of a staged path."""
        return Path("/") / staged.relative_to(self.root)

    @property
    def staging(self) -> bool:
        return self.root.resolve() != Path("/")

    etc = property(lambda self: self.p("/etc/kiosk-agent"))
    config = property(lambda self: self.p("/etc/kiosk-agent/agent.toml"))
    keys = property(lambda self: self.p("/etc/kiosk-agent/keys"))
    signing_key = property(lambda self: self.p("/etc/kiosk-agent/keys/signing.key"))
    signing_pub = property(lambda self: self.p("/etc/kiosk-agent/keys/signing.pub"))
    tls_key = property(lambda self: self.p("/etc/kiosk-agent/keys/tls.key"))
    tls_csr = property(lambda self: self.p("/etc/kiosk-agent/keys/tls.csr"))
    tls_crt = property(lambda self: self.p("/etc/kiosk-agent/keys/tls.crt"))
    ca = property(lambda self: self.p("/etc/kiosk-agent/keys/ca.pem"))              # verifies the broker
    fleet_ca = property(lambda self: self.p("/etc/kiosk-agent/keys/fleet-ca.pem"))  # issued tls.crt
    slip = property(lambda self: self.p("/etc/kiosk-agent/commissioning-slip.txt"))
    log = property(lambda self: self.p("/var/log/kiosk-provision.log"))
    storage = property(lambda self: self.p("/var/lib/kiosk-agent"))
    unit = property(lambda self: self.p(f"/etc/systemd/system/{UNIT_NAME}"))
    wants = property(lambda self: self.p(f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"))
    renew_service = property(lambda self: self.p(f"/etc/systemd/system/{RENEW_SERVICE}"))
    renew_timer = property(lambda self: self.p(f"/etc/systemd/system/{RENEW_TIMER}"))
    renew_wants = property(lambda self: self.p(f"/etc/systemd/system/timers.target.wants/{RENEW_TIMER}"))
    tmpfiles = property(lambda self: self.p("/etc/tmpfiles.d/kiosk-agent.conf"))
    udev = property(lambda self: self.p("/etc/udev/rules.d/99-kiosk.rules"))
    polkit = property(lambda self: self.p("/etc/polkit-1/rules.d/50-kiosk-agent.rules"))   # reboot command

    @staticmethod
    def shipped(name: str) -> Path:
        """A file from the project's ``systemd/`` directory."""
        for directory in _SHIPPED:
            if (directory / name).exists():
                return directory / name
        return _SHIPPED[0] / name
