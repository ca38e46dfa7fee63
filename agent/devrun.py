# SPDX-License-Identifier: Apache-2.0
"""``make run``: a private broker, the agent on simulated hardware, until Ctrl-C.

Everything lives under ``.run/`` in the working directory: the broker's
config and log, the agent's config (a copy of the shipped simulation config
pointed at the private broker) and its state. Ctrl-C stops the agent
(SIGTERM: it publishes its offline state) and then the broker.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.config import DEFAULT_SIM_CONFIG, load_config
from agent.devbroker import DevBroker

__all__ = ["main", "write_sim_config"]


def write_sim_config(target: Path, broker_url: str, state_dir: Path, template: Path = DEFAULT_SIM_CONFIG,
                     overrides: dict[str, str] | None = None) -> Path:
    """Copy the simulation config to ``target`` with the broker and state dir set."""
    text = template.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^url = "mqtt://[^"]*"', f'url = "{broker_url}"', text)
    text = re.sub(r'(?m)^dir = "[^"]*"', f'dir = "{state_dir}"', text)
    for key, value in (overrides or {}).items():
        text = re.sub(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    load_config(target)   # fail here, not in the child, if the template broke
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.devrun", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    broker = DevBroker(run_dir / "broker")
    broker.start()
    # A steady trickle of simulated citizens, so a newcomer sees tx flow.
    config = write_sim_config(run_dir / "agent.toml", broker.url, run_dir / "state",
                              overrides={"sessions_per_minute": "4"})
    cfg = load_config(config)
    bindir = Path(sys.executable).parent
    print(f"""
  kiosk-agent on simulated hardware, broker {broker.url} (log: {broker.log_path})

  watch it:       {bindir}/kioskctl watch --broker {broker.url} --fleet {cfg.kiosk.fleet}
  raw messages:   mosquitto_sub -p {broker.port} -v -t 'kiosk/#'
  open the door:  {bindir}/kiosk-agent sim --config {config} door open
  agent config:   {config}

  Ctrl-C stops the agent and the broker.
""", flush=True)
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)])
    try:
        while agent.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
        broker.stop()
    code = agent.returncode
    print(f"\nstopped (agent exit {code})", flush=True)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
