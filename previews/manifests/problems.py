"""A policy problem (document, field path, message), the error that lists them, and how values are quoted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from previews.manifests.allowlists import MAX_PROBLEMS, MAX_SHOWN, SIMPLE_KEY_RE


def quoted(value: object) -> str:
    """A user-supplied value quoted in a message, never longer than MAX_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def quoted_bare(value: object) -> str:
    """Like quoted, without quotes for strings."""
    return quoted(value)[1:-1] if isinstance(value, str) else quoted(value)


def join_path(path: str, key: str) -> str:
    if SIMPLE_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = key if len(key) <= MAX_SHOWN else key[: MAX_SHOWN - 3] + "..."
    return f"{path}[{shown}]"


@dataclass(frozen=True)
class Problem:
    document: int  # 0-based index of the document in the bundle
    path: str  # field path inside that document, e.g. spec.template.spec.containers[0].image
    message: str

    def __post_init__(self) -> None:
        # Bounded, whatever the bundle holds: a status message must never grow with the input.
        object.__setattr__(self, "path", self.path[:300])
        object.__setattr__(self, "message", self.message[:500])

    def __str__(self) -> str:
        where = f"document {self.document + 1}" + (f", {self.path}" if self.path else "")
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The bundle broke the policy. Carries the first MAX_PROBLEMS problems and how many there were."""

    def __init__(self, problems: list[Problem]):
        self.total = len(problems)
        self.problems = problems[:MAX_PROBLEMS]
        text = "; ".join(str(p) for p in self.problems)
        if self.total > MAX_PROBLEMS:
            text += f"; and {self.total - MAX_PROBLEMS} more problems"
        super().__init__(text)


def only(i: int, path: str, mapping: dict, allowed: Iterable[str], what: str,
         reasons: dict[str, str] | None = None) -> Iterator[Problem]:
    """Every key of `mapping` outside `allowed` is a problem, with its reason when one is known."""
    for key in mapping:
        if key in allowed:
            continue
        reason = (reasons or {}).get(key)
        message = f"{key} is not allowed: {reason}" if reason else f"{quoted(key)} is not an allowed {what} field"
        yield Problem(i, join_path(path, key), message)


def expect_dict(i: int, path: str, value: object) -> Iterator[Problem]:
    if value is not None and not isinstance(value, dict):
        yield Problem(i, path, f"expected a mapping, got {type(value).__name__}")
