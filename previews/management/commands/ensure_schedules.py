from django.core.management.base import BaseCommand

from previews.schedules import ensure_schedules


class Command(BaseCommand):
    help = "Create or update the service's django-q2 schedules (the reaper). Safe to run on every start."

    def handle(self, *args, **options):
        for line in ensure_schedules():
            self.stdout.write(line)
