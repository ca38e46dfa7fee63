# SPDX-License-Identifier: Apache-2.0
"""The loader: picks the firmware slot to run, tries a new one, rolls back.

Installed once at the flash root with mpremote and never updated over the
link (it is the part that must survive a bad update). It reads
``boot.json`` (see ``update.py``):

* no pending image: run the active slot;
* a pending image not yet tried: mark it tried, run it on trial, with a
  guard that rolls back unless the image is confirmed (its hello was
  acknowledged by the agent) within ``confirm_s``;
* a pending image already tried once (it reset or hung before confirming):
  forget it and run the active slot, reporting ``"rollback"`` at hello.

If the trial image fails while loading, the loader falls back in-process
to the active slot, without a reset. It does not touch ``machine``: resets
go through the running slot's ``board`` module.

    # on the device: MicroPython runs main.py after boot.py
"""

import asyncio
import sys

_MODULES = ("app", "board", "inputs", "outputs", "hostwdt", "update", "link")


def _use_slot(slot):
    d = "app_" + slot
    for m in _MODULES:
        if m in sys.modules:
            del sys.modules[m]
    sys.path[:] = [p for p in sys.path if not p.startswith("app_")]
    sys.path.insert(0, d + "/lib")
    sys.path.insert(0, d)
    return d


def _record():
    # The loader needs the boot record before any slot is on sys.path, so it
    # reads it itself; update.py writes it the same way.
    import json
    try:
        with open("boot.json") as f:
            rec = json.loads(f.read())
        if isinstance(rec, dict) and rec.get("active") in ("a", "b"):
            return rec
    except (OSError, ValueError):
        pass
    return {"active": "a", "pending": None, "tries": 0, "cause": None, "confirm_s": 60}


def _write(rec):
    import json
    with open("boot.json.tmp", "w") as f:
        f.write(json.dumps(rec))
    import os
    os.rename("boot.json.tmp", "boot.json")


def _rollback(rec):
    rec["pending"] = None
    rec["tries"] = 0
    rec["cause"] = "rollback"
    _write(rec)


async def _guard(slot, confirm_s):
    await asyncio.sleep(confirm_s)
    rec = _record()
    if rec.get("pending") == slot:
        # Never confirmed: the next boot runs the old image again.
        _rollback(rec)
        import board
        board.Board().reset()


async def _run_trial(app, slot, confirm_s):
    asyncio.create_task(_guard(slot, confirm_s))
    await app.main("app_" + slot, True)


def run():
    rec = _record()
    pending = rec.get("pending")
    if pending in ("a", "b") and pending != rec["active"]:
        if rec.get("tries", 0) >= 1:
            _rollback(rec)
        else:
            rec["tries"] = 1
            _write(rec)
            _use_slot(pending)
            try:
                # Arm the hardware watchdog before loading the trial image,
                # so a hang while loading resets into the rollback path.
                import board
                board.Board().wdt_start(8000)
                import app
                asyncio.run(_run_trial(app, pending, rec.get("confirm_s", 60)))
            except Exception as exc:  # noqa: BLE001 - any failure of a trial image means rollback
                sys.print_exception(exc)  # type: ignore
                rec = _record()
                if rec.get("pending") == pending:
                    _rollback(rec)
                # Forget the failed image's tasks before running the old one.
                asyncio.new_event_loop()
            else:
                return
    _use_slot(_record()["active"])
    import app
    asyncio.run(app.main("app_" + _record()["active"], False))


run()
