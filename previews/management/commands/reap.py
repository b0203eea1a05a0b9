import json

from django.core.management.base import BaseCommand, CommandError

from previews import reaper
from previews.gateways import errors
from previews.reaper_cycle import run_cycle


class Command(BaseCommand):
    help = "Run one reaper cycle now: what would be (or is) deleted, and why. Exits non-zero on errors."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="decide and print, change nothing")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the decisions as JSON")

    def handle(self, *args, dry_run: bool, as_json: bool, **options):
        try:
            result = run_cycle(dry_run=dry_run)
        except errors.GatewayError as exc:
            raise CommandError(f"the reaper could not take its snapshot: {exc}") from exc
        decisions = result.plan.decisions
        if as_json:
            self.stdout.write(json.dumps({"dry_run": dry_run, "alert": result.plan.alert,
                                           "alerts": result.plan.alerts, "summary": result.plan.counts(),
                                           "decisions": [d.as_dict() for d in decisions],
                                           "done": result.done, "errors": result.errors}, indent=2))
        else:
            for action, reasons in result.plan.counts().items():
                self.stdout.write(f"{action} {sum(reasons.values())}: "
                                  + ", ".join(f"{reason} {count}" for reason, count in reasons.items()))
            self._table(decisions, dry_run)
            for alert in result.plan.alerts:
                self.stdout.write(self.style.ERROR(f"ALERT: {alert}"))
            for line in result.done:
                self.stdout.write(f"done: {line}")
            for reason, text in result.snapshot.github_reasons.items():
                self.stdout.write(self.style.WARNING(f"GitHub unknown for {reason}: {text}"))
        if result.errors:
            for error in result.errors:
                self.stderr.write(f"error: {error}")
            raise CommandError(f"{len(result.errors)} decision(s) could not be carried out")

    def _table(self, decisions: list[reaper.Decision], dry_run: bool) -> None:
        rows = [("ACTION", "NAMESPACE", "REASON", "DETAIL")]
        rows += [(d.action, d.namespace, d.reason, d.detail) for d in decisions]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        mode = "dry run: nothing is changed" if dry_run else "carried out"
        self.stdout.write(f"Reaper plan ({mode}), {len(decisions)} decisions")
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)))

