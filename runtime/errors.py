"""The runtime's exceptions. Each message is one line that a user can act on."""

from __future__ import annotations

import os
import signal
import sys
import threading


class UnmixError(Exception):
    """The root of every exception unmix raises on purpose (bad input or bundle, unavailable backend or GPU,
    unwritable output, a cancelled run): `except UnmixError` catches them all. Some also keep a builtin base
    (`BundleError` is a ValueError, `EngineCacheError` a RuntimeError) for callers that catch those."""


class AudioError(UnmixError):
    """Audio that cannot be separated: unreadable, truncated, empty, non-finite or badly shaped."""


class BackendError(UnmixError):
    """A requested device, backend or precision that this machine or bundle cannot provide."""


class OutputError(UnmixError):
    """Outputs that cannot be written (unwritable folder, format that cannot hold the audio)."""


class StreamFinished(UnmixError):
    """`feed` or `finish` on a `Stream` whose `finish` was already called."""


class UsageError(UnmixError, ValueError):
    """An argument the API cannot take (a chunk off the hop grid, an unknown stereo mode, …); also a ValueError."""


class SeparatorClosed(UnmixError):
    """`separate`, `stream` or `separate_file` (or a stream's `feed`/`finish`) after the separator's `close`."""


class Cancelled(UnmixError):
    """Raised between chunks when the caller's `cancel` says stop; nothing partial is kept."""


def _interrupted_while_starting(number: int, frame: object) -> None:
    """Ctrl-C (or SIGTERM) while the command line imports its libraries: one line and 130 (143), not a traceback
    from an import, nor a silent end."""
    # Exit at once: an exception raised here could be caught and wrapped by the import machinery (runpy turns it
    # into an ImportError with a traceback), and nothing has been written yet that would need removing.
    try:
        word = "terminated" if number == signal.SIGTERM else "interrupted"
        sys.stderr.write(f"{word}: stopped while starting; nothing was written\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + number)


def _is_command_line() -> bool:
    """Whether this process is `unmix` (the console script) or `python -m unmix.runtime.cli`."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "unmix":
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return (
        any(a == "-m" and b == "unmix.runtime.cli" for a, b in zip(argv, argv[1:], strict=False))
        or "-munmix.runtime.cli" in argv
    )


# This module is the first of unmix.runtime to be imported: from here on, until the command sets up its own
# handling (cli.separate), a Ctrl-C or a SIGTERM is one line. Only for the command line (a library leaves signals
# alone), and only where they have their default handling (a background job that ignores SIGINT keeps ignoring it).
if _is_command_line() and threading.current_thread() is threading.main_thread():
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted_while_starting)
