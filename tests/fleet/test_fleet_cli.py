# SPDX-License-Identifier: Apache-2.0
"""``kioskctl``'s own surface: version, help, the key snippets a fleet office pastes.

GIVEN the installed ``kioskctl``, WHEN a fleet manager asks for its version
or help, THEN it answers with plain text and every option explains itself;
WHEN the fleet office pastes what ``evidence-keygen`` and ``keys init``
print into a fleet trust file, THEN provisioning and the agent accept it.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
from pathlib import Path

from cmdkit import KIOSKCTL

from agent import __version__
from agent.config import load_config
from agent.sim.devrun import write_sim_config
from fleet.cli import build_parser
from provisioning.steps import fleet_trust_text


def kioskctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KIOSKCTL, *argv], capture_output=True, text=True, timeout=60)


def parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its command words."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += parsers(sub)
    return found


def test_version() -> None:
    done = kioskctl("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kioskctl {__version__}"


def test_help_is_plain_text_and_every_option_has_help() -> None:
    undocumented, markup = [], []
    for prog, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                names = {c.dest for c in action._choices_actions}
                missing = set(action.choices) - names
                undocumented += [f"{prog} {name}" for name in sorted(missing)]
            elif not action.help or action.help == argparse.SUPPRESS:
                undocumented.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
        text = kioskctl(*prog.split()[1:], "--help").stdout
        assert text.startswith("usage: "), f"{prog} --help: {text[:200]}"
        for mark in ("``", ":class:", ":func:", ":meth:", ".. ", "::\n"):
            if mark in text:
                markup.append(f"{prog} --help shows {mark!r}")
    assert not undocumented, "options and subcommands without help:\n" + "\n".join(undocumented)
    assert not markup, "\n".join(markup)


def test_key_snippets_combine_into_one_evidence_table(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    admin = kioskctl("keys", "init", "--dir", str(keys), "--id", "ops-1", "--role", "admin")
    evidence = kioskctl("evidence-keygen", "--out", str(tmp_path / "backoffice.pem"))
    ack = kioskctl("keys", "init", "--dir", str(keys), "--id", "bo-ack", "--role", "backoffice")
    for done in (admin, evidence, ack):
        assert done.returncode == 0, done.stderr
    # The fleet office pastes what it was shown, in the order docs/installing.md gives.
    trust = tmp_path / "fleet-trust.toml"
    trust.write_text(admin.stdout + "\n" + evidence.stdout + ack.stdout)
    text = fleet_trust_text(trust)        # what kiosk-provision checks and copies into agent.toml

    config = write_sim_config(tmp_path / "agent.toml", "mqtt://127.0.0.1:1883", tmp_path / "state")
    config.write_text(config.read_text() + "\n" + text)
    cfg = load_config(config)
    ack_pub = (keys / "bo-ack.pub").read_text().strip()
    assert cfg.evidence.ack_public_keys == (base64.b64decode(ack_pub),)
    assert cfg.evidence.recipient_public_key is not None
    assert f'"{base64.b64encode(cfg.evidence.recipient_public_key).decode()}"' in evidence.stdout
    # The back-office key is also trusted for tx-resend, and for nothing else (its role).
    assert [(op.id, op.role) for op in cfg.commands.operators] == [("ops-1", "admin"), ("bo-ack", "backoffice")]
