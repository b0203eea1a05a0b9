"""`manage.py seed_demo`: the demo repository follows the sample and the placement it is given."""

import pytest
from django.core.management import CommandError, call_command

from previews.models import Repository

pytestmark = pytest.mark.django_db


def test_the_demo_runs_where_it_is_told_and_follows_the_sample_on_every_run(settings, tmp_path, monkeypatch):
    settings.DEBUG = True
    monkeypatch.setattr("previews.management.commands.seed_demo.TOKEN_FILE", tmp_path / "demo-token")
    call_command("seed_demo", node_selector="previews.local/node=real",
                 tolerations="previews.local/real-node:NoSchedule")
    repository = Repository.objects.get(owner="demo", name="shop")
    assert (repository.node_selector, repository.tolerations) == ("previews.local/node=real",
                                                                   "previews.local/real-node:NoSchedule")
    repository.manifest_template = "stale"
    repository.save()
    call_command("seed_demo")
    repository.refresh_from_db()
    assert "localhost/previews-sample:dev" in repository.manifest_template
    assert (repository.node_selector, repository.tolerations) == ("", "")


def test_a_placement_that_is_not_valid_is_refused_with_the_option_named(settings, tmp_path, monkeypatch):
    settings.DEBUG = True
    monkeypatch.setattr("previews.management.commands.seed_demo.TOKEN_FILE", tmp_path / "demo-token")
    with pytest.raises(CommandError, match="--tolerations: 'real-node' is not a taint"):
        call_command("seed_demo", tolerations="real-node")
    assert not Repository.objects.filter(owner="demo", name="shop").exists()


def test_a_new_demo_repository_runs_the_images_built_into_the_node(settings, tmp_path, monkeypatch):
    """The sample's image is imported into the local node's runtime, never pulled: from the first run on."""
    settings.DEBUG = True
    monkeypatch.setattr("previews.management.commands.seed_demo.TOKEN_FILE", tmp_path / "demo-token")
    call_command("seed_demo")
    assert Repository.objects.get(owner="demo", name="shop").allow_cached_images
