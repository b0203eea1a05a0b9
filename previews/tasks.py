"""django-q2 tasks: thin entry points into the service layer."""

from previews import notifications, provisioning


def deploy_preview(preview_id: int, generation: int) -> str:
    return provisioning.deploy(preview_id, generation)


def teardown_preview(preview_id: int, generation: int) -> str:
    return provisioning.teardown(preview_id, generation)


def sync_github(preview_id: int, expiry_warning: bool = False) -> str:
    return notifications.sync_github(preview_id, expiry_warning)
