from __future__ import annotations

import json

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from previews.api.errors import PayloadTooLarge


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class LimitedJSONParser(parsers.JSONParser):
    """Strict JSON with a size cap checked while reading, so an oversized body is refused with 413."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise ParseError("the request body is not UTF-8") from None
        except ValueError as exc:
            raise ParseError(f"the request body is not valid JSON: {exc}") from None
