from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from previews import links, services
from previews.models import Repository

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "shop.yaml"
TOKEN_FILE = settings.BASE_DIR / ".state" / "demo-token"


class Command(BaseCommand):
    help = ("Development only: a demo login, a demo repository with a sample app, and an API token, so a new "
            "user can create a preview at once.")

    def add_arguments(self, parser):
        parser.add_argument("--node-selector", default="",
                            help="Where the demo's pods run, as key=value,... (make run: the local real node)")
        parser.add_argument("--tolerations", default="", help="Taints the demo's pods tolerate, as key:Effect,...")
        parser.add_argument("--tls-secret", default="",
                            help="The TLS Secret its Ingresses name (copied from PREVIEWS_TLS_SECRET_NAMESPACE)")

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo only runs with DJANGO_DEBUG=true: it creates a well-known login")
        user, created = get_user_model().objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True})
        if created:
            user.set_password("demo")
            user.save()
        user.groups.add(Group.objects.get(name="Preview operators"))
        # The sample and where it runs follow the code and the local cluster on every run.
        options_of = {"node_selector": "node_selector", "tolerations": "tolerations", "tls_secret_name": "tls_secret"}
        placement = {field: options[option] for field, option in options_of.items()}
        for field, value in placement.items():
            try:
                Repository._meta.get_field(field).run_validators(value)
            except ValidationError as exc:
                option = options_of[field].replace("_", "-")
                raise CommandError(f"--{option}: {'; '.join(exc.messages)}") from exc
        repository, _ = Repository.objects.update_or_create(
            owner="demo", name="shop",
            # The sample's image is built into the local node's runtime (scripts/node), not pulled: keep its
            # imagePullPolicy (IfNotPresent) instead of the default Always.
            defaults={"manifest_template": SAMPLE.read_text(), "allow_cached_images": True, **placement},
            create_defaults={"base_domain": "preview.localhost", "image_name": "localhost/previews-sample",
                             "manifest_template": SAMPLE.read_text(), "service_name": "web", "service_port": 80,
                             "allow_cached_images": True, **placement},
        )
        token = self._token(repository)
        base = settings.PREVIEWS_PUBLIC_URL
        self.stdout.write(f"""
Dashboard: {base}/   (log in as demo / demo)
Admin:     {base}/admin/
API docs:  {base}/api/docs/

Create a preview of PR #1 of demo/shop on the local cluster:

  curl -sS -X PUT {base}/api/v1/repos/demo/shop/previews/1 \\
    -H "Authorization: Bearer {token}" -H "Content-Type: application/json" \\
    -d '{{"head_sha": "{"1" * 40}", "image": "localhost/previews-sample:dev", "title": "Try it"}}'

wait for it to be ready:

  curl -sS "{base}/api/v1/repos/demo/shop/previews/1?wait=60" -H "Authorization: Bearer {token}"

and open it: {links.preview_url(repository, links.namespace_for(repository, 1))}/
""")

    def _token(self, repository: Repository) -> str:
        # Development only: the demo token's plaintext is kept in .state (outside git) so that every
        # `make run` can print the same ready-to-paste command.
        if TOKEN_FILE.exists():
            plaintext = TOKEN_FILE.read_text().strip()
            if services.token_authenticate(plaintext) is not None:
                return plaintext
        _, plaintext = services.token_create(name="demo", repository=repository)
        TOKEN_FILE.parent.mkdir(exist_ok=True)
        TOKEN_FILE.write_text(plaintext + "\n")
        TOKEN_FILE.chmod(0o600)
        return plaintext
