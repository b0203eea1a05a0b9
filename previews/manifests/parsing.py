"""Parsing a bundle: plain YAML data only (no aliases, no tags), bounded in size, depth and objects.

The size is checked before anything is parsed, and parsing stops at the first document past the object
limit. The scanner and parser are libyaml's (PyYAML's C loader) when PyYAML was built with it: the pure-Python
loader took 6-9 s of a web worker's CPU for a 1 MiB bundle of small scalars, the C one a tenth of a second
(bench/manifest_parse.py). libyaml refuses nesting deeper than 1000 levels by itself, the composer stops at
MAX_NODES values, and our constructor builds plain data from the nodes iteratively, refusing aliases, tags and
nesting past MAX_DEPTH as it goes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import pickle
from collections.abc import Iterator

import yaml

from previews.manifests.allowlists import MAX_DEPTH, MAX_NODES, MAX_OBJECTS
from previews.manifests.problems import ManifestError, Problem

_BaseLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
FAST = _BaseLoader is not yaml.SafeLoader


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{name}" for name in ("str", "map", "seq"))
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "null", "binary",
                                                                    "timestamp"))


class _NotPlainData(yaml.YAMLError):
    def __init__(self, message: str, mark) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


class _PlainDataLoader(_BaseLoader):
    """libyaml's scanner, parser and composer (when available), and our own constructor of plain data: strings,
    numbers, booleans, null, lists and mappings, nothing else. It refuses aliases (billion-laughs style size
    blow-ups), tags, merge keys, deep nesting and more than MAX_NODES values, and keeps timestamps as the
    strings they were written as (as kubectl does)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.nodes = 0

    def resolve(self, kind, value, implicit):
        # Called by the composer for every untagged node: the earliest place to stop a bundle of too many values.
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ManifestError([Problem(0, "", f"the bundle holds more than {MAX_NODES} values (scalars, lists and "
                                                "mappings); the limit keeps parsing cheap")])
        return super().resolve(kind, value, implicit)

    def plain_document(self, root: yaml.Node):
        """The document's data, built iteratively: no node reached twice (that is an alias, `*name`), none nested
        deeper than MAX_DEPTH."""
        seen: set[int] = set()
        pending: list[tuple[dict | list, yaml.Node, int]] = []

        def make(node: yaml.Node, depth: int):
            if id(node) in seen:
                raise _NotPlainData("YAML aliases (*name) are not allowed; write the data out", node.start_mark)
            seen.add(id(node))
            tag = node.tag
            if isinstance(node, yaml.ScalarNode):
                if tag == _STR:
                    return node.value
                if tag == "tag:yaml.org,2002:merge":
                    raise _NotPlainData("merge keys (<<) are not allowed; write the data out", node.start_mark)
                if tag in _SCALAR_TAGS:
                    # The safe constructors' values; those that are not plain data (bytes of !!binary, the
                    # datetime of !!timestamp) are refused with their field path by the policy.
                    return self.yaml_constructors[tag](self, node)
                raise _NotPlainData(f"the tag {tag[:80]} is not allowed", node.start_mark)
            if depth > MAX_DEPTH:
                raise _NotPlainData(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
            if isinstance(node, yaml.MappingNode) and tag == _MAP:
                container: dict | list = {}
            elif isinstance(node, yaml.SequenceNode) and tag == _SEQ:
                container = []
            elif tag in ("tag:yaml.org,2002:set", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"):
                # Not plain data: the policy refuses the (empty) set or tuple with its field path.
                return set() if tag.endswith("set") else ()
            else:
                raise _NotPlainData(f"the tag {tag[:80]} is not allowed", node.start_mark)
            pending.append((container, node, depth))
            return container

        data = make(root, 1)
        while pending:
            container, node, depth = pending.pop()
            if isinstance(container, list):
                container.extend(make(child, depth + 1) for child in node.value)
                continue
            for key_node, value_node in node.value:
                key = make(key_node, depth + 1)
                if isinstance(key, dict | list | set):
                    raise _NotPlainData("a mapping or list as a key is not allowed", key_node.start_mark)
                container[key] = make(value_node, depth + 1)
        return data


_PlainDataLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _problem_from(exc: Exception, index: int) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark else ""
    reason = getattr(exc, "problem", None) or str(exc)
    if "maximum nesting depth" in str(reason):  # libyaml's own bound, 1000 levels
        return Problem(index, "", f"nested more than {MAX_DEPTH} levels deep{where}")
    return Problem(index, "", f"not plain YAML data{where}: {str(reason)[:200]}")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cycle forms while plain data is built, checked and rendered, and the collector's passes over the growing
    heap were most of the time for a bundle of many values (bench/manifest_parse.py)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@functools.lru_cache(maxsize=32)
def _parsed_documents(text: str) -> bytes:
    """The YAML documents of `text` (at most MAX_OBJECTS + 1 of them), pickled. Most deploys render their
    repository's one template; each caller unpickles its own copy."""
    documents: list = []
    loader = _PlainDataLoader(text)
    index = 0
    try:
        while loader.check_node():
            documents.append(loader.plain_document(loader.get_node()))
            index += 1
            if index > MAX_OBJECTS:
                raise ManifestError([Problem(0, "", f"the bundle holds more than {MAX_OBJECTS} documents; the "
                                                    f"limit is {MAX_OBJECTS} objects")])
    except yaml.YAMLError as exc:
        raise ManifestError([_problem_from(exc, index)]) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # Raised by PyYAML's constructors on some values, e.g. an integer of more than 4300 digits, or an
        # explicit !!int tag on text that is not one.
        raise ManifestError([_problem_from(exc, index)]) from None
    except RecursionError:  # only without libyaml: PyYAML's Python composer recurses per level
        raise ManifestError([Problem(index, "", f"nested more than {MAX_DEPTH} levels deep")]) from None
    finally:
        loader.dispose()
    return pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL)


def parse_bundle(text: str, max_bytes: int) -> list[dict]:
    """Parse multi-document YAML into a list of objects, expanding `kind: List`.

    Raises ManifestError when the text is too large, is not plain YAML data, or
    holds something other than objects.
    """
    if not isinstance(text, str):
        raise ManifestError([Problem(0, "", "the bundle must be text")])
    size = len(text.encode())
    if size > max_bytes:
        raise ManifestError([Problem(0, "", f"the bundle is {size} bytes; the limit is {max_bytes}")])
    with collector_paused():
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
