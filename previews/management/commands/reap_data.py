"""`manage.py reap_data [--dry-run] [--json]`: one cycle of the data reaper (previews/data_reaper.py)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from previews import data_reaper
from previews.gateways import preview_db


class Command(BaseCommand):
    help = "Drop preview data (schemas, databases, roles) that no live preview owns; --dry-run only plans."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="decide and record, drop nothing")
        parser.add_argument("--json", action="store_true", help="print the decisions as JSON")

    def handle(self, *args, **options) -> None:
        dry_run = options["dry_run"]
        try:
            cycle = data_reaper.run_cycle(dry_run=dry_run)
        except preview_db.DataError as exc:
            raise CommandError(f"nothing decided: {exc}") from exc
        decisions = [d.as_dict() for d in cycle.plan.decisions]
        if options["json"]:
            self.stdout.write(json.dumps({"dry_run": dry_run, "decisions": decisions, "done": cycle.done,
                                      "errors": cycle.errors}, indent=2))
        else:
            for d in decisions:
                self.stdout.write(f"{d['action']:5} {d['name']:40} {d['reason']}"
                                  + (f" ({d['detail']})" if d["detail"] else ""))
            for line in cycle.done:
                self.stdout.write(f"done: {line}")
        if cycle.errors:
            raise CommandError("; ".join(cycle.errors))
