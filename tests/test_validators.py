"""Input rules, one table each."""

import pytest
from django.core.exceptions import ValidationError

from previews import validators as v


@pytest.mark.parametrize("owner,name", [("acme", "shop"), ("a", "b"), ("Acme-Corp", "my.repo_1"),
                                        ("x" * 39, "y" * 100)])
def test_valid_owners_and_repository_names(owner, name):
    v.validate_owner(owner)
    v.validate_repo_name(name)


@pytest.mark.parametrize("value", ["-acme", "acme-", "ac--me", "x" * 40, ""])
def test_invalid_owners_say_why(value):
    with pytest.raises(ValidationError, match="not a GitHub owner"):
        v.validate_owner(value)


@pytest.mark.parametrize("value", ["", "sh op", "..", ".", "y" * 101, "shop/extra"])
def test_invalid_repository_names_say_why(value):
    with pytest.raises(ValidationError, match="not a GitHub repository name"):
        v.validate_repo_name(value)


@pytest.mark.parametrize("value", [1, 42, v.MAX_PR_NUMBER])
def test_valid_pr_numbers(value):
    v.validate_pr_number(value)


@pytest.mark.parametrize(
    "value,message",
    [(0, "must be positive"), (-5, "must be positive"), (v.MAX_PR_NUMBER + 1, "larger than"),
     ("12", "not a whole number"), (True, "not a whole number"), (1.5, "not a whole number")],
)
def test_invalid_pr_numbers_say_why(value, message):
    with pytest.raises(ValidationError, match=message):
        v.validate_pr_number(value)


@pytest.mark.parametrize("value", ["pr-1", "a", "0", "a" * 63, "my-app-pr-123"])
def test_valid_namespaces(value):
    v.validate_dns_label(value)


@pytest.mark.parametrize(
    "value,message",
    [("a" * 64, "at most 63"), ("Pr-1", "DNS-1123"), ("pr_1", "DNS-1123"), ("-pr", "DNS-1123"),
     ("pr-", "DNS-1123"), ("", "DNS-1123"), ("pr.1", "DNS-1123")],
)
def test_invalid_namespaces_say_why(value, message):
    with pytest.raises(ValidationError, match=message):
        v.validate_dns_label(value)


@pytest.mark.parametrize("value", ["0123456789abcdef0123456789abcdef01234567"])
def test_valid_sha(value):
    v.validate_sha(value)


@pytest.mark.parametrize("value", ["abc", "0123456789ABCDEF0123456789ABCDEF01234567", "g" * 40, "a" * 41, ""])
def test_invalid_sha(value):
    with pytest.raises(ValidationError, match="not a commit SHA"):
        v.validate_sha(value)


@pytest.mark.parametrize(
    "value,name",
    [
        ("nginx", "nginx"),
        ("nginx:1.27", "nginx"),
        ("ghcr.io/acme/shop:pr-42-abc123", "ghcr.io/acme/shop"),
        ("localhost:5000/app:dev", "localhost:5000/app"),
        ("ghcr.io/acme/shop@sha256:" + "a" * 64, "ghcr.io/acme/shop"),
        ("ghcr.io/acme/shop:v1@sha256:" + "b" * 64, "ghcr.io/acme/shop"),
    ],
)
def test_valid_images_and_their_names(value, name):
    v.validate_image(value)
    assert v.image_name(value) == name


@pytest.mark.parametrize(
    "value",
    ["", "Nginx", "nginx:", "nginx latest", "nginx:1.0\n", "ghcr.io/acme/shop:tag with space",
     "shop@sha256:short", "a" * 600, "nginx:\x00"],
)
def test_invalid_images(value):
    with pytest.raises(ValidationError, match="not an image reference"):
        v.validate_image(value)


@pytest.mark.parametrize("value,pairs", [
    ("", ()),
    ("previews.local/node=real", (("previews.local/node", "real"),)),
    (" pool = previews , kubernetes.io/arch=amd64,", (("pool", "previews"), ("kubernetes.io/arch", "amd64"))),
    ("empty-value=", (("empty-value", ""),)),
])
def test_a_node_selector_is_label_pairs(value, pairs):
    assert v.parse_node_selector(value) == pairs


@pytest.mark.parametrize("value", ["pool", "=real", "pool=a b", "Bad_Prefix!/x=y", "a/b/c=d", "x=" + "v" * 64,
                                   "-leading=x"])
def test_a_node_selector_that_is_not_label_pairs_names_the_bad_part(value):
    with pytest.raises(ValidationError) as caught:
        v.parse_node_selector(f"ok=1,{value}")
    assert repr(value.strip()) in caught.value.messages[0]


@pytest.mark.parametrize("value,pairs", [
    ("", ()),
    ("previews.local/real-node:NoSchedule", (("previews.local/real-node", "NoSchedule"),)),
    ("a:NoExecute, b:PreferNoSchedule", (("a", "NoExecute"), ("b", "PreferNoSchedule"))),
])
def test_tolerations_are_taint_keys_with_their_effect(value, pairs):
    assert v.parse_tolerations(value) == pairs


@pytest.mark.parametrize("value", ["dedicated", "dedicated:", "dedicated:Sometimes", ":NoSchedule", "a b:NoSchedule"])
def test_a_toleration_that_is_not_key_and_effect_names_the_bad_part(value):
    with pytest.raises(ValidationError) as caught:
        v.parse_tolerations(value)
    assert repr(value) in caught.value.messages[0] and "NoSchedule, PreferNoSchedule, NoExecute" in \
        caught.value.messages[0]
