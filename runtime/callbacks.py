"""The callback types that separations take: `progress(done, total)` and `cancel`.

Kept apart from `separator` and `files` so that each can use them without importing the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeAlias

Progress: TypeAlias = Callable[[int, int], None]
"""Called with (input frames done, total input frames; 0 when unknown) after every engine call."""

Cancel: TypeAlias = Callable[[], bool] | threading.Event
"""Stops the run between chunks (`Cancelled`) once it returns true, or once the event is set."""


def cancel_check(cancel: Cancel | None) -> Callable[[], bool] | None:
    """`cancel` as a function that says whether to stop (an event's `is_set`), or None."""
    if cancel is None:
        return None
    return cancel.is_set if hasattr(cancel, "is_set") else cancel  # any event: threading's, multiprocessing's
