"""Who changed a preview, and the events of its timeline (the audit log)."""

from __future__ import annotations

from dataclasses import dataclass

from previews.models import ActorKind, EventAction, Preview, PreviewEvent


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    name: str
    url: str = ""  # e.g. the GitHub Actions run of a workflow actor; kept in the event's details

    @classmethod
    def system(cls) -> Actor:
        return cls(ActorKind.SYSTEM, "worker")


REAPER = Actor(ActorKind.REAPER, "reaper")


def event_row(preview: Preview, actor: Actor, action: EventAction, message: str = "",
              generation: int | None = None, **details) -> PreviewEvent:
    """One event of the preview's timeline, unsaved (a bulk path creates many in one statement), at the
    preview's generation unless `generation` says which."""
    if actor.url:
        details["actor_url"] = actor.url
    return PreviewEvent(preview=preview, actor_kind=actor.kind, actor=actor.name[:150], action=action,
                        message=message, details=details,
                        generation=preview.generation if generation is None else generation)


def record_event(preview: Preview, actor: Actor, action: EventAction, message: str = "", **details) -> PreviewEvent:
    event = event_row(preview, actor, action, message, **details)
    event.save()
    return event


def record_event_of(preview_id: int, generation: int, actor: Actor, action: EventAction, message: str = "",
                    **details) -> PreviewEvent:
    """`record_event` for a preview just updated where it was at `generation`: no need to read it back."""
    return record_event(Preview(pk=preview_id, generation=generation), actor, action, message, **details)
