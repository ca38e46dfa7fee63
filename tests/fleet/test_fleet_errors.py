# SPDX-License-Identifier: Apache-2.0
"""fleet/ has one exception root, FleetError, and every class under it has its own stable code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import fleet
from fleet.errors import FleetError


def _fleet_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for info in pkgutil.iter_modules(fleet.__path__, "fleet."):
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("fleet."):
                found.add(obj)
    return found


def test_every_fleet_exception_derives_from_fleet_error_with_its_own_code() -> None:
    classes = _fleet_exceptions()
    assert {"FleetError", "BrokerError", "KeyFileError", "CaError"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert issubclass(cls, FleetError), f"{cls.__module__}.{cls.__name__} is outside FleetError"
    codes = [cls.__dict__.get("code") for cls in classes]
    assert all(isinstance(code, str) and code.startswith("fleet.") for code in codes), codes
    assert len(set(codes)) == len(codes), codes


def test_the_names_callers_use_are_the_tree_s_classes() -> None:
    from fleet.ca import CaError
    from fleet.keys import KeyError_
    from fleet.mqtt import BrokerError, FleetClient

    assert issubclass(CaError, FleetError) and issubclass(KeyError_, FleetError)
    try:
        FleetClient("http://nowhere")
    except BrokerError as exc:
        assert exc.code == "fleet.broker"
    else:
        raise AssertionError("a non-MQTT URL was accepted")
