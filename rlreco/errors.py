"""Exception types for input the user can fix.

Every error raised for bad input derives from :class:`RlrecoError`. Its message is one line
naming the file, column, key or row at fault and what is allowed; the CLI prints it and exits
with status 2, without a traceback.
"""

from __future__ import annotations

import re

#: Longest error line shown; longer ones are cut (a file's junk header can be huge).
MAX_ERROR_CHARS = 2000
#: Line breaks and tabs: each run of them (with spaces) becomes one space in an error line.
_BREAKS = re.compile(r"[ \t\r\n]+")


class RlrecoError(Exception):
    """Base class for errors caused by user input (exit code 2 in the CLI)."""


class ConfigError(RlrecoError):
    """A configuration file or option is missing, malformed or out of range."""


class DataError(RlrecoError):
    """A transactions file is missing, unreadable, or has bad columns or values."""


class SnapshotError(RlrecoError):
    """A run directory, snapshot or manifest is missing, corrupt or foreign."""


class SimulationError(RlrecoError):
    """A simulation request cannot be carried out on the given run (e.g. slate too large)."""


class SyncError(RlrecoError):
    """A MongoDB export, import or online visit failed (unreachable server, auth, bad data)."""


def shown(value: object, limit: int = 40) -> str:
    """A value read from a file as it appears in an error line: ``repr`` (so control
    characters and line breaks are escaped), cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` as one printable line: each run of line breaks, tabs and spaces becomes one
    space, other control characters are escaped (``\\x0b``), and the line is cut to at most
    ``limit`` characters."""
    flat = _BREAKS.sub(" ", text).strip()
    line = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in flat
    )
    return line if len(line) <= limit else line[: limit - 3] + "..."
