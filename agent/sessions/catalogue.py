# SPDX-License-Identifier: Apache-2.0
"""The service catalogue: what a citizen can do at this kiosk, step by step.

Services come from the configuration's ``[[services]]`` tables; a
configuration without any gets the shipped default catalogue
(``agent/data/services.toml``: driving-licence renewal, pension payment
record print, utility bill payment, residence permit application). Both go
through the same validation as the rest of the configuration, so an error
names the key.

    cat = Catalogue.from_config(cfg)
    svc = cat.get("pension_record_print")
    [s.kind for s in svc.steps]        # ["read_id", "confirm", "print_receipt"]
    cat.needs(svc, "read_id")          # True
    svc.receipt                        # "purpose": not offered while the printer cannot print
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

from agent.config import STEP_KINDS, Config, ServiceConfig, StepConfig, _services
from agent.errors import AgentError, ConfigError

__all__ = ["Catalogue", "UnknownService", "DEFAULT_CATALOGUE", "load_default_services",
           "STEP_KINDS", "ServiceConfig", "StepConfig"]

DEFAULT_CATALOGUE = Path(__file__).parent.parent / "data" / "services.toml"


class UnknownService(AgentError):
    """No service with that id in the catalogue."""

    code = "agent.session.unknown_service"


def load_default_services(path: Path = DEFAULT_CATALOGUE) -> tuple[ServiceConfig, ...]:
    """Parse the shipped catalogue with the configuration's own validator."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), None, f"a readable service catalogue ({exc})") from exc
    # The same checks as [[services]] in agent.toml: one definition of a valid service.
    return _services(data.get("services"))


class Catalogue:
    """An ordered, read-only set of services, looked up by id."""

    def __init__(self, services: tuple[ServiceConfig, ...]) -> None:
        if not services:
            raise ConfigError("services", [], "at least one service")
        self._services = {svc.id: svc for svc in services}
        self.default = False

    @classmethod
    def from_config(cls, cfg: Config) -> Catalogue:
        """The configured services, or the shipped default when none are configured."""
        if cfg.services:
            return cls(cfg.services)
        cat = cls(load_default_services())
        cat.default = True
        return cat

    def get(self, service_id: str) -> ServiceConfig:
        try:
            return self._services[service_id]
        except KeyError:
            raise UnknownService(f"no service {service_id!r}; known: {', '.join(self._services)}") from None

    def ids(self) -> list[str]:
        return list(self._services)

    def __iter__(self) -> Iterator[ServiceConfig]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._services

    @staticmethod
    def needs(service: ServiceConfig, kind: str) -> bool:
        """Whether ``service`` has a step of ``kind`` (one of STEP_KINDS)."""
        if kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {kind!r}")
        return any(step.kind == kind for step in service.steps)

    def describe(self) -> list[dict[str, object]]:
        """PII-free menu for a UI: ids, names, steps, offline flag."""
        return [{"id": s.id, "name_zh": s.name_zh, "name_en": s.name_en, "offline": s.offline,
                 "mail_document": s.mail_document, "receipt": s.receipt,
                 "face_legal_basis": s.face_legal_basis is not None,
                 "steps": [{"kind": st.kind, "timeout_s": st.timeout_s} for st in s.steps]}
                for s in self._services.values()]
