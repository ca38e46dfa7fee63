# SPDX-License-Identifier: Apache-2.0
"""docs/installing.md part 1 is a true one-page visit: at most six commands, each one the tools accept.

    .venv/bin/python -m pytest tests/packaging/test_install_guide.py
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from agent.cli import build_parser as agent_parser
from provisioning.cli import build_parser as provision_parser

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "installing.md"


def _visit() -> tuple[str, list[list[str]]]:
    text = GUIDE.read_text()
    part = text[text.index("## 1. The visit"):text.index("### 1.1")]
    block = re.search(r"```sh\n(.*?)```", part, re.S)
    assert block, "part 1 has no command block"
    commands = [shlex.split(line.split("#", 1)[0]) for line in block.group(1).splitlines() if line.strip()]
    return part, commands


def test_the_visit_is_at_most_six_commands_and_says_how_many() -> None:
    part, commands = _visit()
    assert 1 <= len(commands) <= 6
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    assert f"Closing note: **{len(commands)} commands, 1 reboot**" in part
    assert f"**{words[len(commands)]} commands and one reboot**" in GUIDE.read_text()


def test_every_kiosk_command_of_the_visit_is_one_the_programs_accept() -> None:
    _, commands = _visit()
    seen = set()
    for argv in commands:
        assert argv[0] == "sudo", argv
        program, args = argv[1], argv[2:]
        if program == "kiosk-provision":
            ns = provision_parser().parse_args(args)
            assert ns.claim is not None and ns.answers is not None    # claim enrolment leads
        elif program == "kiosk-agent":
            agent_parser().parse_args(args)
        elif program == "apt":
            assert args[0] in ("update", "install")
        seen.add(program)
    assert {"apt", "kiosk-provision", "kiosk-agent"} <= seen
