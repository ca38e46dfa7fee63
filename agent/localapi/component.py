# SPDX-License-Identifier: Apache-2.0
"""Builds the local API server from what it serves (called by the daemon).

    server = build_local_api(cfg, engine=engine, devices=peripherals.devices,
                             device_events=agent.event_listeners, mode=lambda: agent.mode,
                             online=lambda: uplink.connected, sim_actions=simcontrol.actions or None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.config import Config
from agent.localapi.dev import Action, DevService
from agent.localapi.devices import DEVICE_SPECS, DeviceService
from agent.localapi.kiosk import KioskService, Sessions
from agent.localapi.server import LocalApiServer
from agent.localapi.service import Service
from hal.device import DeviceEvent, Peripheral

__all__ = ["build_local_api", "token_path"]


def token_path(cfg: Config) -> Any:
    """``local_api.token_file``, or ``<storage.dir>/local-api.token`` when unset."""
    return cfg.local_api.token_file or cfg.storage.dir / "local-api.token"


def build_local_api(cfg: Config, *, engine: Sessions, devices: Mapping[str, Peripheral],
                    device_events: list[Callable[[DeviceEvent], None]], mode: Callable[[], str],
                    online: Callable[[], bool],
                    sim_actions: Mapping[str, Mapping[str, Action]] | None) -> LocalApiServer:
    """The server with the kiosk, the six device services and, given simulator actions, ``/dev``."""
    services: list[Service] = [KioskService(engine, mode=mode, online=online, developer=sim_actions is not None)]
    services += [DeviceService(spec, devices, device_events) for spec in DEVICE_SPECS]
    if sim_actions is not None:
        services.append(DevService(sim_actions))
    return LocalApiServer(cfg.local_api, token_path(cfg), services=services)
