"""Schemathesis generates requests from /api/schema/ and checks the answers against the schema.

No input may produce a 5xx, and every response must match what the schema
documents (status code, content type, body, headers). One check is left out:
"a schema-valid request must be accepted" cannot hold for rules that depend on
stored state (a repository's maximum TTL, its preview limit, a preview being
deleted), which answer 422/409 by design. A bounded number of examples per
operation keeps this to seconds.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from previews import services
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES_PER_OPERATION = 40


def test_no_request_produces_a_server_error_or_breaks_the_schema(live_server):
    repository = make_repository(owner="acme", name="shop")
    make_preview(repository, pr_number=1)
    token = services.token_create(name="fuzz", repository=repository)[1]
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case):
            if case.path_parameters and "owner" in case.path_parameters and case.path_parameters.get("pr") != "":
                # Aim the examples at a repository that exists, so they reach the views' own logic.
                case.path_parameters.update(owner="acme", repo="shop")
            if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int) and case.query["wait"] > 1:
                case.query["wait"] = 1  # a long wait on a pending preview proves nothing more, slowly
            case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"},
                                   excluded_checks=[positive_data_acceptance])

        check()
