"""The dashboard's two groups, kept in step with the code after every migrate (and test flush)."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

VIEWERS = "Preview viewers"
OPERATORS = "Preview operators"
VIEW = ["view_preview"]
OPERATE = [*VIEW, "extend_preview", "pin_preview", "redeploy_preview", "kill_preview", "reset_data_preview"]


def ensure_groups(**_signal_kwargs) -> None:
    """Viewers see previews; operators may also extend, pin, redeploy and kill them, and reset their data."""
    for name, codenames in ((VIEWERS, VIEW), (OPERATORS, OPERATE)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="previews", codename__in=codenames))
