"""Giving the C heap's freed pages back to the system, between the large buffers of one run and the next."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc keeps them otherwise, and the next buffers may land
    elsewhere, so the peak would hold both)."""
    if trim := _malloc_trim():
        trim(0)
