"""Pure validation rules shared by models, the API and the dashboard.

Each rule raises django.core.exceptions.ValidationError with a message that
says what is wrong and what is expected.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

# GitHub: owner 1-39 chars of letters, digits and single hyphens, not starting
# or ending with a hyphen; repository 1-100 chars of letters, digits, '.', '-', '_'.
OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# DNS-1123: a label (a namespace, a prefix) and a subdomain (object and storage class names).
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_RE = re.compile(f"^{DNS_LABEL}$")
DNS_LABEL_SQL_RE = f"^{DNS_LABEL}$"  # the same, for CheckConstraints (Postgres regular expressions)
DNS_SUBDOMAIN_RE = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# An image's tag and digest, alone (the API's `images[].reference`) or in a full reference.
TAG = r"[\w][\w.-]{0,127}"
DIGEST = r"sha256:[0-9a-f]{64}"
TAG_RE = re.compile(TAG)
DIGEST_RE = re.compile(DIGEST)
# Loosely the distribution reference grammar: [registry[:port]/]path[:tag][@digest].
IMAGE_RE = re.compile(
    # A first component is a registry only if it looks like a host: has a dot or a port, or is localhost.
    r"^(?:(?P<registry>(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|localhost)(?::[0-9]+)?|[a-zA-Z0-9-]+:[0-9]+)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    rf"(?::(?P<tag>{TAG}))?"
    rf"(?:@(?P<digest>{DIGEST}))?$"
)

MAX_PR_NUMBER = 2_147_483_647
# A year: the longest a preview may live, and so the most any TTL or extension may add.
MAX_TTL_HOURS = 24 * 366
MAX_NAMESPACE_LENGTH = 63


def validate_owner(value: str) -> None:
    if not OWNER_RE.fullmatch(value or ""):
        raise ValidationError(
            f"{value!r} is not a GitHub owner: 1-39 letters, digits or single hyphens, "
            "not starting or ending with a hyphen",
            code="invalid_owner",
        )


def validate_repo_name(value: str) -> None:
    if not REPO_NAME_RE.fullmatch(value or "") or value in (".", ".."):
        raise ValidationError(
            f"{value!r} is not a GitHub repository name: 1-100 letters, digits, '.', '-' or '_'",
            code="invalid_repo_name",
        )


def validate_dns_label(value: str) -> None:
    if len(value or "") > MAX_NAMESPACE_LENGTH:
        raise ValidationError(
            f"{value!r} is {len(value)} characters long; a namespace has at most {MAX_NAMESPACE_LENGTH}",
            code="too_long",
        )
    if not DNS_LABEL_RE.fullmatch(value or ""):
        raise ValidationError(
            f"{value!r} is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
            code="invalid_dns_label",
        )


def validate_prefix(value: str) -> None:
    # Room is left for "-<PR number>" (up to 10 digits) within 63 characters.
    if len(value or "") > 40:
        raise ValidationError(f"namespace prefix {value!r} is longer than 40 characters", code="too_long")
    validate_dns_label(value)


def validate_pr_number(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"PR number {value!r} is not a whole number", code="invalid_pr_number")
    if value <= 0:
        raise ValidationError(f"PR number {value} must be positive", code="invalid_pr_number")
    if value > MAX_PR_NUMBER:
        raise ValidationError(f"PR number {value} is larger than {MAX_PR_NUMBER}", code="invalid_pr_number")


def validate_sha(value: str) -> None:
    if not SHA_RE.fullmatch(value or ""):
        raise ValidationError(
            f"{value!r} is not a commit SHA: 40 lower-case hexadecimal characters", code="invalid_sha"
        )


def validate_image(value: str) -> None:
    if not value or len(value) > 512 or not IMAGE_RE.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not an image reference like registry.example.com/team/app:tag or app@sha256:<64 hex>",
            code="invalid_image",
        )


def parse_image_name(reference: str) -> str | None:
    """The reference without its tag or digest ('ghcr.io/a/b:1@sha256:..' -> 'ghcr.io/a/b'); None if it is none."""
    match = IMAGE_RE.fullmatch(reference)
    if not match:
        return None
    registry = match.group("registry")
    return f"{registry}/{match.group('path')}" if registry else match.group("path")


def image_name(reference: str) -> str:
    """`parse_image_name`, refusing what is not an image reference."""
    name = parse_image_name(reference)
    if name is None:
        raise ValidationError(f"{reference!r} is not an image reference", code="invalid_image")
    return name


# GitHub's author_association values (https://docs.github.com/en/graphql/reference/enums#commentauthorassociation).
AUTHOR_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER",
                       "MANNEQUIN", "NONE")


def parse_associations(value: str) -> frozenset[str]:
    return frozenset(part.strip().upper() for part in value.split(",") if part.strip())


def validate_associations(value: str) -> None:
    unknown = sorted(parse_associations(value) - set(AUTHOR_ASSOCIATIONS))
    if unknown:
        raise ValidationError(f"unknown author associations {', '.join(unknown)}; use some of "
                              f"{', '.join(AUTHOR_ASSOCIATIONS)}")


def validate_storage_classes(value: str) -> None:
    """A comma-separated list of StorageClass names (DNS subdomains)."""
    for name in (part.strip() for part in (value or "").split(",")):
        if name and (len(name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(name)):
            raise ValidationError(f"{name!r} is not a storage class name (a lower-case DNS subdomain)",
                                  code="invalid_storage_class")


def validate_token_audiences(value: str) -> None:
    """A comma-separated list of token audiences: printable, no spaces, at most 253 characters each."""
    for name in (part.strip() for part in (value or "").split(",")):
        if name and (len(name) > 253 or not re.fullmatch(r"[!-~]+", name)):
            raise ValidationError(f"{name!r} is not a token audience (printable characters, no spaces)",
                                  code="invalid_token_audience")


def validate_annotation_domains(value: str) -> None:
    """A comma-separated list of annotation domains (DNS subdomains), never Kubernetes' own."""
    for name in (part.strip() for part in (value or "").split(",")):
        if not name:
            continue
        if len(name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(name):
            raise ValidationError(f"{name!r} is not an annotation domain (a lower-case DNS subdomain)",
                                  code="invalid_annotation_domain")
        if any(name == d or name.endswith("." + d) for d in ("kubernetes.io", "k8s.io")):
            raise ValidationError(f"{name!r} is Kubernetes' own domain; its annotations follow fixed rules",
                                  code="invalid_annotation_domain")


def validate_pg_identifier(value: str) -> None:
    """A Postgres name as it is stored: 1-63 bytes (longer names would be truncated silently), no NUL."""
    size = len((value or "").encode())
    if not value or size > 63 or "\x00" in value:
        raise ValidationError(f"{value!r} is not a Postgres name: 1 to 63 bytes ({size} given)",
                              code="invalid_pg_identifier")


# Kubernetes label keys ([prefix/]name) and values, as the API server checks them.
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(LABEL_NAME_RE.fullmatch(name)) and (
        not prefix or (len(prefix) <= 253 and bool(DNS_SUBDOMAIN_RE.fullmatch(prefix))))


def _pairs(value: str, split, valid, error) -> tuple[tuple[str, str], ...]:
    """Comma-separated parts, each split in two by `split` and checked by `valid`; `error(part)` says why not."""
    pairs = []
    for part in (p.strip() for p in (value or "").split(",")):
        if not part:
            continue
        first, sep, second = (s.strip() for s in split(part))
        if not sep or not valid(first, second):
            raise ValidationError(error(part), code="invalid")
        pairs.append((first, second))
    return tuple(pairs)


def parse_node_selector(value: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value` (label keys and values) -> pairs; raises ValidationError naming the bad part."""
    return _pairs(value, lambda part: part.partition("="),
                  lambda key, val: is_label_key(key) and bool(LABEL_VALUE_RE.fullmatch(val)),
                  lambda part: f"{part!r} is not a node label as key=value")


def parse_tolerations(value: str) -> tuple[tuple[str, str], ...]:
    """`key:Effect,key:Effect` (a taint key tolerated whatever its value) -> pairs; raises ValidationError."""
    return _pairs(value, lambda part: part.rpartition(":"),
                  lambda key, effect: is_label_key(key) and effect in TAINT_EFFECTS,
                  lambda part: f"{part!r} is not a taint to tolerate as key:Effect (Effect one of "
                               f"{', '.join(TAINT_EFFECTS)})")


def validate_node_selector(value: str) -> None:
    parse_node_selector(value)


def validate_tolerations(value: str) -> None:
    parse_tolerations(value)
