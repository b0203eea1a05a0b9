"""Parsing a bundle: plain YAML data only (no aliases, no tags), bounded in size, depth and objects."""

from __future__ import annotations

import functools
import pickle

import yaml

from previews.manifests.allowlists import MAX_DEPTH, MAX_OBJECTS
from previews.manifests.problems import ManifestError, Problem


class _PlainDataLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs style size blow-ups) and deep nesting, and keeps
    timestamps as the strings they were written as (as kubectl does)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed; write the data out", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_PlainDataLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.lru_cache(maxsize=32)
def _parsed_documents(text: str) -> bytes:
    """The YAML documents of `text`, pickled. Most deploys render their repository's one template, and
    parsing it in pure Python was the largest part of rendering; each caller unpickles its own copy."""
    documents: list = []
    loader = _PlainDataLoader(text)
    index = 0
    try:
        while loader.check_data():
            documents.append(loader.get_data())
            index += 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ManifestError([Problem(index, "", f"not plain YAML data{where}: {str(reason)[:200]}")]) from None
    finally:
        loader.dispose()
    return pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL)


def parse_bundle(text: str, max_bytes: int) -> list[dict]:
    """Parse multi-document YAML into a list of objects, expanding `kind: List`.

    Raises ManifestError when the text is too large, is not plain YAML data, or
    holds something other than objects.
    """
    size = len(text.encode())
    if size > max_bytes:
        raise ManifestError([Problem(0, "", f"the bundle is {size} bytes; the limit is {max_bytes}")])
    documents: list = pickle.loads(_parsed_documents(text))

    objects: list[dict] = []
    problems: list[Problem] = []
    for i, doc in enumerate(documents):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(Problem(i, "", f"expected an object (a mapping), got {type(doc).__name__}"))
            continue
        if doc.get("kind") == "List":
            items = doc.get("items")
            if not isinstance(items, list):
                problems.append(Problem(i, "items", "a List needs a list of items"))
                continue
            for j, item in enumerate(items):
                if not isinstance(item, dict):
                    problems.append(Problem(i, f"items[{j}]", "expected an object (a mapping)"))
                else:
                    objects.append(item)
            continue
        objects.append(doc)
    if problems:
        raise ManifestError(problems)
    if not objects:
        raise ManifestError([Problem(0, "", "the bundle holds no objects")])
    if len(objects) > MAX_OBJECTS:
        raise ManifestError([Problem(0, "", f"the bundle holds {len(objects)} objects; the limit is {MAX_OBJECTS}")])
    return objects
