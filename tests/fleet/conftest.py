# SPDX-License-Identifier: Apache-2.0
"""``kioskctl`` as a fleet manager runs it: real processes, real broker, real agents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The command tests' kit (keys, a configured agent) serves these tests too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "commands"))

from cmdkit import KIOSKCTL


class Follower:
    """A long-running ``kioskctl watch`` / ``tx tail``, its stdout and stderr in files."""

    def __init__(self, workdir: Path, *argv: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = workdir / "stdout", workdir / "stderr"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([KIOSKCTL, *argv], stdout=out, stderr=err, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.out.splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


FollowerFactory = Callable[..., Follower]


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[FollowerFactory]:
    started: list[Follower] = []

    class Factory(Follower):
        def __init__(self, *argv: str) -> None:
            super().__init__(tmp_path / f"kioskctl-{len(started)}", *argv)
            started.append(self)

    yield Factory
    for proc in started:
        proc.stop()
