# SPDX-License-Identifier: Apache-2.0
"""One registry: every command kioskctl may sign has a handler on the kiosk, and no role names a stranger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.control.commands import COMMANDS, HANDLERS, RegistryMismatch, build_registry
from agent.wire.signing import ROLE_COMMANDS, SPECS, Spec

AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_every_spec_has_its_handler_and_every_handler_its_spec() -> None:
    assert set(COMMANDS) == set(SPECS) == set(HANDLERS)
    for name, command in COMMANDS.items():
        assert command.spec is SPECS[name] and command.handler is HANDLERS[name]


def test_roles_name_only_registered_commands() -> None:
    for role, names in ROLE_COMMANDS.items():
        assert names <= set(COMMANDS), f"role {role}: {sorted(names - set(COMMANDS))}"


async def _handler(*_args: object) -> None:
    return None


def test_a_mismatch_is_refused_naming_each_side() -> None:
    with pytest.raises(RegistryMismatch) as caught:
        build_registry({"ping": Spec(), "only-spec": Spec()}, {"ping": _handler, "only-handler": _handler},
                       {"operator": frozenset({"ping", "ghost"})})
    message = str(caught.value)
    assert caught.value.code == "cmd.registry_mismatch"
    assert "specs without a handler: only-spec" in message
    assert "handlers without a spec: only-handler" in message
    assert "role operator names unregistered commands: ghost" in message


def test_a_matching_registry_pairs_spec_and_handler() -> None:
    spec = Spec()
    registry = build_registry({"ping": spec}, {"ping": _handler}, {"operator": frozenset({"ping"})})
    assert registry["ping"].spec is spec and registry["ping"].handler is _handler


# What the components used to find each other by; they are now given what they use.
SERVICE_LOCATOR = re.compile(r"components\.get\(|getattr\(agent,|getattr\(self\.agent|lead adds|agent\.components"
                             r"|importlib\.import_module\(")


def test_no_component_finds_another_by_name() -> None:
    found = [f"{path.relative_to(AGENT.parent)}:{n}: {line.strip()}"
             for path in sorted(AGENT.rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if SERVICE_LOCATOR.search(line)]
    assert not found, "\n".join(found)
