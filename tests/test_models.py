"""The database itself refuses previews and repositories the cluster could not hold."""

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction

from previews.models import Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db


def _refused_by_database(fn) -> str:
    with pytest.raises((IntegrityError, DataError)) as info, transaction.atomic():
        fn()
    return str(info.value)


def test_a_second_preview_for_the_same_pr_is_refused_by_the_database():
    preview = make_preview()
    error = _refused_by_database(
        lambda: make_preview(preview.repository, pr_number=preview.pr_number, namespace="other-ns")
    )
    assert "preview_unique_repository_pr" in error


def test_two_previews_cannot_share_a_namespace():
    preview = make_preview()
    error = _refused_by_database(lambda: make_preview(namespace=preview.namespace))
    assert "namespace" in error


@pytest.mark.parametrize("number", [0, -1])
def test_pr_number_must_be_positive_in_the_database(number):
    error = _refused_by_database(lambda: make_preview(pr_number=number, namespace="pr-x"))
    assert "pr_number" in error


@pytest.mark.parametrize("namespace", ["PR-1", "pr_1", "-pr-1", "pr-1-", "pr.1", "", "a" * 64])
def test_namespace_must_be_a_dns_label_in_the_database(namespace):
    error = _refused_by_database(lambda: make_preview(namespace=namespace))
    assert "preview_namespace_dns_label" in error or "value too long" in error


def test_a_63_character_namespace_is_accepted():
    assert make_preview(namespace="a" * 63).namespace == "a" * 63


@pytest.mark.parametrize("field,value", [("status", "running"), ("desired", "sideways")])
def test_status_and_desired_state_must_be_known_values(field, value):
    error = _refused_by_database(lambda: make_preview(**{field: value}))
    assert f"preview_{field}_valid" in error


def test_head_sha_must_be_forty_hex_characters_in_the_database():
    error = _refused_by_database(lambda: make_preview(head_sha="abc123"))
    assert "preview_head_sha_hex40" in error


@pytest.mark.parametrize(
    "field,value,constraint",
    [
        ("owner", "-acme", "repository_owner_valid"),
        ("owner", "ac me", "repository_owner_valid"),
        ("name", "sh op", "repository_name_valid"),
        ("name", "..", "repository_name_valid"),
        ("namespace_prefix", "PR", "repository_prefix_dns_label"),
    ],
)
def test_repository_names_follow_github_rules_in_the_database(field, value, constraint):
    assert constraint in _refused_by_database(lambda: make_repository(**{field: value}))


def test_a_repository_is_unique_by_owner_and_name():
    make_repository(owner="acme", name="shop")
    assert "repository_unique_full_name" in _refused_by_database(lambda: make_repository(owner="acme", name="shop"))


def test_validation_says_which_field_is_wrong_and_why():
    repository = make_repository()
    preview = Preview(repository=repository, pr_number=0, namespace="Bad_NS", head_sha="xyz", expires_at=None)
    with pytest.raises(ValidationError) as info:
        preview.full_clean()
    errors = info.value.message_dict
    assert "PR number 0 must be positive" in " ".join(errors["pr_number"])
    assert "not a DNS-1123 label" in " ".join(errors["namespace"])
    assert "not a commit SHA" in " ".join(errors["head_sha"])


def test_validation_reports_a_duplicate_preview_for_the_same_pr():
    preview = make_preview()
    duplicate = Preview(repository=preview.repository, pr_number=preview.pr_number, namespace="pr-other",
                        head_sha="b" * 40, expires_at=preview.expires_at)
    with pytest.raises(ValidationError) as info:
        duplicate.full_clean()
    assert "__all__" in info.value.message_dict


def test_the_live_and_expiry_indexes_exist():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'previews_preview'")
        names = {row[0] for row in cursor.fetchall()}
    assert {"preview_repo_status_idx", "preview_live_expiry_idx"} <= names
