from __future__ import annotations

import json

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from previews.api.errors import PayloadTooLarge

MAX_DEPTH = 32  # nesting of objects and arrays in a request body; the API's own shapes need 3


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_depth(value) -> int:
    """How deeply objects and arrays nest in parsed JSON (iteratively: no input exhausts the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


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
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise ParseError("the request body is not UTF-8") from None
        except RecursionError:
            raise ParseError(f"the request body nests objects or arrays more than {MAX_DEPTH} levels deep") from None
        except ValueError as exc:
            raise ParseError(f"the request body is not valid JSON: {exc}") from None
        if json_depth(data) > MAX_DEPTH:
            raise ParseError(f"the request body nests objects or arrays more than {MAX_DEPTH} levels deep")
        return data
