"""API tokens: shown once, stored only as a hash, compared in constant time."""

import pytest
from django.db import connection

from previews import services, tokens
from previews.models import ApiToken
from tests.factories import make_repository

pytestmark = pytest.mark.django_db


def test_the_plaintext_is_nowhere_in_the_database():
    repository = make_repository()
    token, plaintext = services.token_create(name="ci", repository=repository)
    secret = plaintext.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM previews_apitoken t")
        rows = " ".join(row[0] for row in cursor.fetchall())
    assert token.prefix in rows
    assert plaintext not in rows
    assert secret not in rows


def test_a_token_authenticates_with_its_plaintext_and_records_its_use():
    token, plaintext = services.token_create(name="ci", repository=make_repository())
    found = services.token_authenticate(plaintext)
    assert found is not None and found.pk == token.pk
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None


@pytest.mark.parametrize(
    "mangle",
    [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: t + "x", lambda t: "", lambda t: "pvw_",
     lambda t: "Bearer " + t, lambda t: t.replace("pvw_", "xyz_")],
)
def test_a_wrong_token_does_not_authenticate(mangle):
    _, plaintext = services.token_create(name="ci", repository=make_repository())
    assert services.token_authenticate(mangle(plaintext)) is None


def test_a_revoked_token_does_not_authenticate():
    token, plaintext = services.token_create(name="ci", repository=make_repository())
    services.token_revoke(token)
    assert services.token_authenticate(plaintext) is None


def test_token_lookup_uses_the_prefix_and_never_the_plaintext():
    new = tokens.generate_token()
    assert tokens.parse_prefix(new.plaintext) == new.prefix
    assert tokens.token_matches(new.plaintext, new.token_hash)
    assert not tokens.token_matches(new.plaintext + "x", new.token_hash)


def test_an_admin_token_has_no_repository():
    token, _ = services.token_create(name="ops", repository=None)
    assert token.repository is None
    assert "admin" in str(token)
