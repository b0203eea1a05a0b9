from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from previews.models import Repository


class Command(BaseCommand):
    help = "Development only: a demo login and a demo repository, so a new user can try the service at once."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo only runs with DJANGO_DEBUG=true: it creates a well-known login")
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password("demo")
            user.save()
        Repository.objects.get_or_create(
            owner="demo", name="shop",
            defaults={"base_domain": "preview.localhost", "image_name": "ghcr.io/demo/shop"},
        )
        self.stdout.write(
            f"Dashboard: {settings.PREVIEWS_PUBLIC_URL}/  (login demo / demo)\n"
            f"Admin:     {settings.PREVIEWS_PUBLIC_URL}/admin/"
        )
