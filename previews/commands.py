"""`/preview` commands in pull request comments: parsing and the decisions around them. Pure, no I/O.

A comment is hostile input. Only its first non-blank line is read, and only
when that line starts with the exact word `/preview`; everything else in the
comment is ignored (quoted text, code blocks, a second command). The line is
split on spaces and tabs only, sub-commands and units are ASCII, numbers are
ASCII digits with bounds, and a free-text reason loses control and
format characters (bidi overrides, zero-width joiners) and is cut short.
Nothing a commenter writes is ever echoed to GitHub except through the
fixed texts below: the reason goes to the preview's timeline only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PREFIX = "/preview"
MAX_LINE = 300  # characters of the command line considered at all
MAX_REASON = 200
MAX_EXTEND_HOURS = 24 * 90  # an upper bound before the repository's own maximum TTL applies

CREATE, EXTEND, REDEPLOY, PIN, UNPIN, SLEEP, WAKE, DELETE, HELP = (
    "create", "extend", "redeploy", "pin", "unpin", "sleep", "wake", "delete", "help")
NO_ARGUMENTS = frozenset({REDEPLOY, PIN, UNPIN, SLEEP, WAKE, DELETE, HELP})

_DURATION = re.compile(r"([0-9]{1,5})([hd]?)", re.ASCII)
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}", re.ASCII)

HELP_TEXT = "\n".join([
    "`/preview` commands (the first line of a comment):",
    "",
    "| command | what it does |",
    "| --- | --- |",
    "| `/preview` | create this PR's preview (when the repository deploys previews on request) |",
    "| `/preview extend 48h [reason]` | expire later (hours `h` or days `d`, within the repository's maximum) |",
    "| `/preview redeploy` | deploy the same commit again |",
    "| `/preview pin` / `/preview unpin` | never expire / expire again |",
    "| `/preview sleep` / `/preview wake` | scale to zero now / bring it back |",
    "| `/preview delete` | delete the preview |",
    "| `/preview help` | this table |",
])


@dataclass(frozen=True)
class Command:
    name: str
    hours: int | None = None
    reason: str = ""

    def display(self) -> str:
        """A safe, canonical rendering (never the commenter's own text)."""
        if self.name == CREATE:
            return PREFIX
        if self.name == EXTEND:
            return f"{PREFIX} extend {self.hours}h"
        return f"{PREFIX} {self.name}"


@dataclass(frozen=True)
class Malformed:
    """A `/preview` line that is not a valid command; `problem` is our own text, safe to post."""

    problem: str


def _clean_reason(words: list[str]) -> str:
    text = " ".join(words)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return text.strip()[:MAX_REASON]


def command_line(body: object) -> str | None:
    """The comment's first non-blank line if it is a `/preview` command line, else None."""
    if not isinstance(body, str):
        return None
    for line in body[: MAX_LINE * 4].splitlines():
        line = line.strip(" \t")
        if not line:
            continue
        return line if re.split(r"[ \t]", line, maxsplit=1)[0].lower() == PREFIX else None
    return None


def parse(body: object) -> Command | Malformed | None:
    """The command in a comment, a Malformed one, or None when the comment is not a command at all."""
    line = command_line(body)
    if line is None:
        return None
    if len(line) > MAX_LINE:
        return Malformed(f"the command line is longer than {MAX_LINE} characters")
    words = [w for w in re.split(r"[ \t]+", line) if w]
    if len(words) == 1:
        return Command(CREATE)
    name = words[1].lower()
    if not name.isascii():
        return Malformed("unknown command")
    args = words[2:]
    if name in NO_ARGUMENTS:
        if args:
            return Malformed(f"`{PREFIX} {name}` takes no arguments")
        return Command(name)
    if name == EXTEND:
        if not args:
            return Malformed(f"say how long: `{PREFIX} extend 48h [reason]`")
        match = _DURATION.fullmatch(args[0].lower())
        if match is None:
            return Malformed(f"`{PREFIX} extend` needs a duration such as `48h` or `2d`")
        hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
        if not 1 <= hours <= MAX_EXTEND_HOURS:
            return Malformed(f"extend by 1 to {MAX_EXTEND_HOURS} hours")
        return Command(EXTEND, hours=hours, reason=_clean_reason(args[1:]))
    return Malformed("unknown command")


def is_trusted(association: object, trusted: frozenset[str]) -> bool:
    return isinstance(association, str) and association.upper() in trusted


def valid_login(login: object) -> bool:
    """A GitHub login we can safely mention (letters, digits, single hyphens, ≤ 39 characters)."""
    return isinstance(login, str) and _LOGIN.fullmatch(login) is not None


def rate_limited(recent: int, limit: int) -> bool:
    """`recent` commands on this PR in the window, not counting this one."""
    return recent >= limit


def help_reply(login: str, problem: str) -> str:
    return f"@{login} {problem}.\n\n{HELP_TEXT}"
