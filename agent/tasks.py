# SPDX-License-Identifier: Apache-2.0
"""Fire-and-forget tasks that are neither lost nor silent.

The event loop keeps only a weak reference to a task, so one nobody holds
can be garbage-collected mid-flight, and an exception nobody retrieves is
reported late (at collection) or never. :func:`spawn` keeps the task in a
set until it is done and logs its failure at once:

    spawn(self.send(topic, payload), name="result-resend", keep=self._tasks)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["log_failure", "spawn"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Tasks spawned without an owner's set: referenced here until they finish.
_background: set[asyncio.Future[Any]] = set()


def spawn(work: Awaitable[T], *, name: str | None = None,
          keep: set[asyncio.Future[Any]] | None = None) -> asyncio.Future[T]:
    """Run ``work`` in the background, referenced (in ``keep``, if given) until done, its failure logged."""
    task = asyncio.ensure_future(work)
    if name is not None and isinstance(task, asyncio.Task):
        task.set_name(name)
    owner = _background if keep is None else keep
    owner.add(task)
    task.add_done_callback(owner.discard)
    task.add_done_callback(log_failure)
    return task


def log_failure(task: asyncio.Future[Any]) -> None:
    """Done callback: log the exception of a task nobody awaits (cancellation is not a failure)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.error("background task %s failed: %s: %s", name, exc.__class__.__name__, exc, exc_info=exc)
