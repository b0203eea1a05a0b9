"""A heartbeat file for the exec probes of the processes that serve no HTTP (the worker, the watcher).

PREVIEWS_HEARTBEAT_FILE (default: none) is touched while the process does its work; the probe is
`python -m previews.heartbeat <file> <max age in seconds>`: exit 0 when the file was touched within that
age, 1 otherwise. Plain Python, no Django: a probe every few seconds must cost next to nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def touch(path: str) -> None:
    """Best effort: a probe that fails is how a missing heartbeat is noticed, never an exception here."""
    if not path:
        return
    try:
        with open(path, "a"):
            pass
        os.utime(path)
    except OSError:
        pass


def age(path: str, now: float | None = None) -> float | None:
    """Seconds since `path` was touched; None when there is no such file."""
    try:
        return (time.time() if now is None else now) - os.path.getmtime(path)
    except OSError:
        return None


def fresh(path: str, max_age: float, now: float | None = None) -> bool:
    seconds = age(path, now)
    return seconds is not None and seconds <= max_age


def beat(path: str, interval: float, healthy) -> threading.Thread:
    """A daemon thread touching `path` every `interval` seconds when `healthy()` says so (for the process's life)."""
    def run() -> None:
        while True:
            if healthy():
                touch(path)
            time.sleep(interval)

    thread = threading.Thread(target=run, name="heartbeat", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m previews.heartbeat FILE MAX_AGE_SECONDS", file=sys.stderr)
        return 2
    path, max_age = argv[0], float(argv[1])
    seconds = age(path)
    if seconds is None or seconds > max_age:
        print(f"{path}: {'missing' if seconds is None else f'{seconds:.0f}s old'} (at most {max_age:.0f}s)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
