from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PreviewsConfig(AppConfig):
    name = "previews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from previews import checks, login_throttle  # noqa: F401  (registers checks, connects signal receivers)
        from previews.permissions import ensure_groups

        # After the auth app has created the permissions (post_migrate also follows a test flush).
        post_migrate.connect(ensure_groups, sender=self, dispatch_uid="previews-ensure-groups")
