"""The runtime's exceptions. Each message is one line that a user can act on."""

from __future__ import annotations


class UnmixError(Exception):
    """Base class of the runtime's own errors (bad input, unavailable backend, unwritable output)."""


class AudioError(UnmixError):
    """Audio that cannot be separated: unreadable, truncated, empty, non-finite or badly shaped."""


class BackendError(UnmixError):
    """A requested device, backend or precision that this machine or bundle cannot provide."""


class OutputError(UnmixError):
    """Outputs that cannot be written (unwritable folder, format that cannot hold the audio)."""


class StreamFinished(UnmixError):
    """`feed` or `finish` on a `Stream` whose `finish` was already called."""


class Cancelled(Exception):
    """Raised between chunks when the caller's `cancel` says stop; nothing partial is kept."""
