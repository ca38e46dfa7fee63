# SPDX-License-Identifier: Apache-2.0
"""Fire-and-forget tasks (agent.tasks.spawn): referenced until done, failures logged at once."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

import pytest

from agent.tasks import spawn


def test_a_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise ValueError("the broker said no")

    async def go() -> None:
        keep: set[asyncio.Future[Any]] = set()
        task = spawn(boom(), name="result-resend", keep=keep)
        assert task in keep
        await asyncio.wait({task})
        await asyncio.sleep(0)              # done callbacks run on the next turn
        assert not keep

    with caplog.at_level(logging.ERROR, logger="agent.tasks"):
        asyncio.run(go())
    assert "background task result-resend failed: ValueError: the broker said no" in caplog.text


def test_a_cancel_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        task = spawn(asyncio.sleep(30), name="sleeper")
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task})
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="agent.tasks"):
        asyncio.run(go())
    assert "sleeper" not in caplog.text


def test_an_unreferenced_task_is_not_collected_while_it_waits() -> None:
    # The loop holds tasks weakly: one waiting on a future only it knows would be
    # garbage-collected mid-flight ("Task was destroyed but it is pending").
    async def go() -> None:
        async def wait_forever() -> None:
            await asyncio.get_running_loop().create_future()

        ref = weakref.ref(spawn(wait_forever(), name="orphan"))
        await asyncio.sleep(0)
        gc.collect()
        task = ref()
        assert task is not None and not task.done()
        task.cancel()
        await asyncio.wait({task})

    asyncio.run(go())
