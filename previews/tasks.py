"""django-q2 tasks: thin entry points into previews.provisioning."""

from previews import provisioning


def deploy_preview(preview_id: int, generation: int) -> str:
    return provisioning.deploy(preview_id, generation)


def teardown_preview(preview_id: int, generation: int) -> str:
    return provisioning.teardown(preview_id, generation)
