"""Read queries compiled to SQL once per process, for the API's hottest reads.

Compiling a QuerySet (joins, the select list of every column, lookups, ordering) costs more CPU than
Postgres spends answering a lookup by a unique key: it was most of an API GET's time outside Postgres.
A `CompiledQuery` builds its QuerySet once, with a distinct sample value per argument, keeps the SQL and
the compiler, and then only executes that SQL with the request's values; rows become model instances
the way QuerySet iteration makes them (converters, `from_db`, select_related objects).

Only for queries whose variable parts are all arguments: a value computed at build time (the time now, a
setting) would be frozen into the SQL. `CompiledQuery.run` returns what `list(build(**values))` would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # (argument name, None, adapter class or None) or (None, a constant of the query, None), in SQL order
    params: tuple[tuple[str | None, Any, type | None], ...]
    compiler: Any  # django.db.models.sql.compiler.SQLCompiler, after as_sql(): its select and klass_info
    model: type[Model]
    fields: slice
    init_list: list[str]
    related_populators: list[Any]
    converters: dict[int, Any]  # column position -> the field's and the backend's converters


class CompiledQuery(Generic[M]):
    def __init__(self, build: Callable[..., QuerySet[M]], **samples: object) -> None:
        """`build(**arguments)` returns the QuerySet; `samples` gives each argument a value that no other
        parameter of the query has (it is how the argument's place in the SQL is found)."""
        self._build = build
        self._samples = samples
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, using: str) -> _Compiled:
        queryset = self._build(**self._samples).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        spec = tuple(self._parameter(p) for p in params)
        missing = set(self._samples) - {name for name, _, _ in spec if name}
        if missing:
            raise ValueError(f"arguments {sorted(missing)} do not appear as parameters of the compiled query")
        klass_info, select = compiler.klass_info, compiler.select
        fields = klass_info["select_fields"]
        model_fields = slice(fields[0], fields[-1] + 1)
        return _Compiled(
            sql=sql, params=spec, compiler=compiler, model=klass_info["model"], fields=model_fields,
            init_list=[column[0].target.attname for column in select[model_fields]],
            related_populators=get_related_populators(klass_info, select, using),
            converters=compiler.get_converters([column[0] for column in select[0:compiler.col_count]]))

    def _parameter(self, param: object) -> tuple[str | None, object, type | None]:
        """(argument, None, the adapter class Django wrapped it in, if any), or (None, constant, None)."""
        for name, sample in self._samples.items():
            if isinstance(param, type(sample)) and param == sample:
                return name, None, (type(param) if type(param) is not type(sample) else None)
        return None, param, None

    def run(self, using: str = "default", **values: object) -> list[M]:
        compiled = self._compiled.get(using)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(using) or self._compile(using)
                self._compiled[using] = compiled
        params = [(cast(values[name]) if cast else values[name]) if name else constant
                  for name, constant, cast in compiled.params]
        with connections[using].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        objects: list[M] = []
        if compiled.converters:
            rows = compiled.compiler.apply_converters(rows, compiled.converters)
        for row in rows:
            obj = compiled.model.from_db(using, compiled.init_list, row[compiled.fields])
            for populator in compiled.related_populators:
                populator.populate(row, obj)
            objects.append(obj)  # type: ignore[arg-type]
        return objects
