"""Request and response shapes of the REST API. Validation rules come from previews.validators."""

from __future__ import annotations

import functools
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework import serializers

from previews import links, validators
from previews.models import Preview
from previews.rows import Record


class StrictCharField(serializers.CharField):
    """A string and nothing else: a number is not silently turned into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error rather than silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class ImageOverrideSerializer(StrictSerializer):
    name = StrictCharField(max_length=300, trim_whitespace=False,
                                 help_text="Image name as written in the manifests, e.g. ghcr.io/acme/api")
    reference = StrictCharField(max_length=200, trim_whitespace=False,
                                      help_text="The new tag (pr-42-abc1234) or digest (sha256:...)")

    def validate(self, attrs):
        name, reference = attrs["name"], attrs["reference"]
        if validators.DIGEST_RE.fullmatch(reference):
            full = f"{name}@{reference}"
        elif validators.TAG_RE.fullmatch(reference):
            full = f"{name}:{reference}"
        else:
            raise serializers.ValidationError({"reference": [f"{reference!r} is not a tag or a sha256 digest"]})
        match = validators.IMAGE_RE.fullmatch(name)
        if match is None or match.group("tag") or match.group("digest"):
            raise serializers.ValidationError({"name": [f"{name!r} is not an image name (no tag or digest)"]})
        attrs["full"] = full
        return attrs


class PreviewUpsertSerializer(StrictSerializer):
    head_sha = StrictCharField(trim_whitespace=False, validators=[validators.validate_sha],
                                     help_text="The PR's head commit, 40 lower-case hex characters")
    image = StrictCharField(required=False, trim_whitespace=False, max_length=512,
                                  validators=[validators.validate_image],
                                  help_text="One image built for this PR, e.g. ghcr.io/acme/shop:pr-42-abc1234")
    images = ImageOverrideSerializer(many=True, required=False,
                                     help_text="Several images, for monorepos; the others keep their references")
    manifests = StrictCharField(required=False, allow_blank=True, trim_whitespace=False,
                                      help_text="Multi-document YAML built by CI; default: the repository's template")
    ttl_hours = serializers.IntegerField(required=False, min_value=1, max_value=validators.MAX_TTL_HOURS,
                                         help_text="Hours until the preview expires")
    title = StrictCharField(required=False, allow_blank=True, max_length=300)
    author = StrictCharField(required=False, allow_blank=True, max_length=39)

    def validate_manifests(self, value: str) -> str:
        limit = settings.PREVIEWS_MAX_MANIFEST_BYTES
        if len(value.encode()) > limit:
            raise serializers.ValidationError(f"manifests are larger than {limit} bytes")
        return value

    def validate(self, attrs):
        if "image" in attrs and "images" in attrs:
            raise serializers.ValidationError({"image": ["give either image or images, not both"]})
        attrs["image_references"] = image_references(attrs)
        return attrs


def image_references(attrs: dict) -> tuple[str, ...]:
    """The full image references a valid body asks for: its `image`, or each of its `images`."""
    return (attrs["image"],) if "image" in attrs else tuple(i["full"] for i in attrs.get("images", []))


# The fields of CI's common PUT, checked by `common_upsert_data`.
COMMON_UPSERT_FIELDS = ("head_sha", "image", "title", "author", "ttl_hours")


@functools.cache
def _common_fields() -> dict[str, serializers.Field]:
    """The serializer's own fields for the common body, built once (not on every request)."""
    fields = PreviewUpsertSerializer().fields
    return {name: fields[name] for name in COMMON_UPSERT_FIELDS}


def common_upsert_data(data: object) -> dict | None:
    """`PreviewUpsertSerializer(data=data).validated_data` for a common, valid body; None for anything else.

    CI's usual PUT ({"head_sha", "image"} and perhaps title, author, ttl_hours) is checked here by the
    serializer's own fields and their validators (blank or not, lengths, NUL and surrogate characters, bounds,
    the SHA and image rules), without building the serializer for each request (copying its fields on every
    request was a fifth of a PUT's time). Anything unusual or invalid (other fields, `images`, `manifests`, a
    value that is not exactly a string or an integer, a value a validator refuses) gives None: the serializer
    judges it, so every error message stays the serializer's. A test holds this equal to the serializer on
    valid bodies and None on invalid ones.
    """
    if type(data) is not dict or "head_sha" not in data or "image" not in data:
        return None
    fields = _common_fields()
    out = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            return None
        if isinstance(field, serializers.IntegerField):
            if type(value) is not int:
                return None
        elif type(value) is not str or (value == "" and not field.allow_blank):
            return None
        for validator in field.validators:
            try:
                validator(value)
            except (ValidationError, serializers.ValidationError):
                return None
        out[key] = value
    out["image_references"] = image_references(out)
    return out


class ExtendSerializer(StrictSerializer):
    hours = serializers.IntegerField(min_value=1, max_value=validators.MAX_TTL_HOURS,
                                     help_text="Hours to add to the expiry")
    reason = StrictCharField(max_length=500, help_text="Why the preview is needed for longer")


class PreviewLinksSerializer(serializers.Serializer):
    self = serializers.CharField()
    dashboard = serializers.CharField()
    extend = serializers.CharField()
    reset_data = serializers.CharField()


class PreviewDataSerializer(serializers.Serializer):
    mode = serializers.CharField(help_text="none, schema, database or in-namespace (the repository's data mode)")
    database = serializers.CharField(allow_blank=True, help_text="The preview's schema or database name")
    size_bytes = serializers.IntegerField(allow_null=True, help_text="Its size when last measured")
    size_measured_at = serializers.DateTimeField(allow_null=True)
    last_reset_at = serializers.DateTimeField(allow_null=True)


# A preview as the API shows it: the fields declare the schema (a docstring here would become its description);
# `preview_representation` renders them.
class PreviewSerializer(serializers.ModelSerializer):
    repository = serializers.CharField(source="repository.full_name")
    url = serializers.CharField(help_text="https://<namespace>.<base domain>")
    data = PreviewDataSerializer(read_only=True)
    links = PreviewLinksSerializer(read_only=True)

    class Meta:
        model = Preview
        fields = ["repository", "pr_number", "namespace", "url", "status", "status_message", "desired",
                  "head_sha", "images", "generation", "observed_generation", "expires_at", "pinned", "title",
                  "author", "created_at", "updated_at", "ready_at", "deleted_at", "last_activity_at", "slept_at",
                  "data", "links"]
        read_only_fields = fields

    def to_representation(self, instance: Preview) -> dict:
        """What DRF's field-by-field rendering of the fields above gives (a test compares them), without
        building a ModelSerializer's fields on every response, which was a fifth of an API GET's time."""
        return preview_representation(instance)


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="Field path, e.g. images[0].reference")
    message = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """application/problem+json (RFC 9457)."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = ProblemFieldErrorSerializer(many=True, required=False)


class ResourcesSerializer(serializers.Serializer):
    cpu_millicores = serializers.IntegerField()
    memory_bytes = serializers.IntegerField()
    cpu = serializers.CharField(help_text="e.g. 250m or 1.5")
    memory = serializers.CharField(help_text="e.g. 320Mi")


class CostSerializer(serializers.Serializer):
    requested = ResourcesSerializer(help_text="CPU and memory the namespace's pods request now")
    saved_by_sleeping = ResourcesSerializer(help_text="What its sleeping workloads would request awake")


class PreviewCostSerializer(CostSerializer):
    pr_number = serializers.IntegerField()
    namespace = serializers.CharField()
    status = serializers.CharField()


class RepositoryCostSerializer(serializers.Serializer):
    repository = serializers.CharField()
    total = CostSerializer()
    previews = PreviewCostSerializer(many=True)


def _datetime(value: datetime | None, zone) -> str | None:
    """DRF's DateTimeField output: ISO 8601 in the current time zone (`zone`), UTC written as Z."""
    if not value:
        return None
    text = value.astimezone(zone).isoformat()  # what timezone.localtime(value, zone) gives, for aware values
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: int | None) -> int | None:
    return None if value is None else int(value)


def preview_representation(preview: Preview | Record) -> dict:
    """A preview as the API shows it: the PreviewSerializer's fields, in their order. `preview` is a Preview
    with its repository, or the `Record` of one (`selectors.preview_by_name`)."""
    repository = preview.repository
    zone = timezone.get_current_timezone()
    return {
        "repository": f"{repository.owner}/{repository.name}",
        "pr_number": int(preview.pr_number),
        "namespace": _text(preview.namespace),
        "url": _text(preview.url),
        "status": _text(preview.status),
        "status_message": _text(preview.status_message),
        "desired": _text(preview.desired),
        "head_sha": _text(preview.head_sha),
        "images": preview.images,
        "generation": _number(preview.generation),
        "observed_generation": _number(preview.observed_generation),
        "expires_at": _datetime(preview.expires_at, zone),
        "pinned": None if preview.pinned is None else bool(preview.pinned),
        "title": _text(preview.title),
        "author": _text(preview.author),
        "created_at": _datetime(preview.created_at, zone),
        "updated_at": _datetime(preview.updated_at, zone),
        "ready_at": _datetime(preview.ready_at, zone),
        "deleted_at": _datetime(preview.deleted_at, zone),
        "last_activity_at": _datetime(preview.last_activity_at, zone),
        "slept_at": _datetime(preview.slept_at, zone),
        "data": {
            "mode": _text(preview.data_mode or repository.data_mode),
            "database": _text(preview.data_name),
            "size_bytes": _number(preview.data_size_bytes),
            "size_measured_at": _datetime(preview.data_size_at, zone),
            "last_reset_at": _datetime(preview.data_reset_at, zone),
        },
        "links": links.api_links(preview),
    }
