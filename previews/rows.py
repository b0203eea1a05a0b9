"""Model instances from hand-written SQL, for the API's hottest reads and its one-statement PUT.

Why not the ORM there: building and compiling a QuerySet (joins, lookups, the select list) cost more CPU than
Postgres spends answering a lookup by a unique key, and it was most of an API GET's time outside Postgres.
Why not a cache of compiled QuerySets: it would have to reach into the ORM's compiler internals. What is left
is plain and supported: SQL through `connection.cursor()` with the columns named from the model's public
`_meta` API, each value passed through its field's `from_db_value` (what the ORM does for JSON fields), and the
instance made with `Model.from_db`, the documented hook the ORM itself uses. Fields that are not selected are
deferred: reading one later is one more query, as with `QuerySet.only()`.

`Columns.record` is cheaper still, for what is only shown: a read-only `Record` with the columns' values as
attributes (the same values the model instance would hold), without a model's `__init__` (a third of a GET's
time in Python went to making the two instances).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from django.db import connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


class Columns(Generic[M]):
    """A model's columns (all, or the fields named), in the model's order: a SELECT list and a row loader."""

    def __init__(self, model: type[M], fields: tuple[str, ...] | None = None) -> None:
        concrete = model._meta.concrete_fields
        if fields is not None:
            unknown = set(fields) - {f.attname for f in concrete} - {f.name for f in concrete}
            if unknown:
                raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
        chosen = [f for f in concrete if fields is None or f.attname in fields or f.name in fields]
        if model._meta.pk not in chosen:
            chosen.insert(0, model._meta.pk)
        self.model = model
        self.attnames = [f.attname for f in chosen]
        self.columns = [f.column for f in chosen]
        self.width = len(chosen)
        # Fields whose Python value differs from what psycopg returns (JSON is read as text, as Django reads it).
        self.converters = [(i, f) for i, f in enumerate(chosen) if hasattr(f, "from_db_value")]

    def select(self, alias: str) -> str:
        return ", ".join(f'{alias}."{column}"' for column in self.columns)

    def _converted(self, values, using: str):
        """`values` as the model's fields hold them (what the ORM's `from_db_value` does)."""
        if self.converters:
            values = list(values)
            connection = connections[using]
            for i, field in self.converters:
                values[i] = field.from_db_value(values[i], None, connection)
        return values

    def load(self, values, using: str = "default") -> M:
        """The instance for `values`, this object's columns in order (a row or a slice of one)."""
        return self.model.from_db(using, self.attnames, self._converted(values, using))

    def record(self, values, using: str = "default") -> Record:
        """The columns' values as a `Record`, converted as `load` converts them; `pk` is the primary key."""
        values = self._converted(values, using)
        record = Record()
        record.__dict__.update(zip(self.attnames, values, strict=True))
        record.__dict__["pk"] = values[0]
        return record


class Record:
    """A row's values by field name (attname), read-only; what a model instance of the row would hold."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Record is read-only ({name})")

    def __repr__(self) -> str:
        return f"Record({self.__dict__!r})"
