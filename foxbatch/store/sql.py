"""What the store's groups of queries share: the base class of their mixins, and the SQL
helpers that more than one of them uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Executable,
    Row,
    bindparam,
    exists,
    func,
    select,
    update,
)

from foxbatch.store.engine import READ_ONLY
from foxbatch.store.tables import attempts, items, jobs

KEY_LOOKUP_CHUNK = 900


class Queries:
    """The base of the query mixins that make up `Repository`: its engine, clock and dialect
    INSERT (set by `Repository.__init__`), and read-only connections."""

    engine: Engine
    clock: Callable[[], float]
    _insert: Callable[..., Any]

    def _read(self) -> Connection:
        return self.engine.connect().execution_options(**READ_ONLY)


def _job_filter(job_ids: Sequence[int] | None) -> list[Any]:
    return [] if job_ids is None else [items.c.job_id.in_(list(job_ids))]


def _job_ids_filter(job_ids: Sequence[int] | None) -> list[Any]:
    """The same filter on the jobs table."""
    return [] if job_ids is None else [jobs.c.id.in_(list(job_ids))]


# Queued rows are found through the index that leads with (job_id, status): the queries below
# run over the jobs table and look into each job's queued rows with one index seek, all in one
# statement (a lookup by state alone would make SQLite scan that index whole).

def _has_queued(due_by: Any = None) -> Any:
    """For a query over jobs: the job has a queued row (due by `due_by`, a time or a bound
    parameter, if given)."""
    due = [] if due_by is None else [items.c.next_attempt_at <= due_by]
    return exists().where(items.c.job_id == jobs.c.id, items.c.status == "queued", *due)


def _first_queued_due() -> Any:
    """For a query over jobs: when the job's first queued row falls due."""
    return (select(func.min(items.c.next_attempt_at))
            .where(items.c.job_id == jobs.c.id, items.c.status == "queued")
            .scalar_subquery())


def _lock_items(conn: Connection, item_ids: Sequence[int]) -> None:
    """PostgreSQL: lock these items in id order before changing them, so that what this
    transaction checks (ownership) cannot change before it writes, and two transactions that
    both wait for locks never deadlock. SQLite's BEGIN IMMEDIATE already serialises writers."""
    if conn.dialect.name != "postgresql" or not item_ids:
        return
    conn.execute(select(items.c.id).where(items.c.id.in_(sorted(set(item_ids))))
                 .order_by(items.c.id).with_for_update())


def _attempt_update(**values: Any) -> Any:
    return (update(attempts)
            .where(attempts.c.item_id == bindparam("b_item"),
                   attempts.c.number == bindparam("b_number"))
            .values(**values))


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled for one dialect: its SQL text, the values it carries itself and
    (qmark style) the order of its parameters."""

    sql: str
    constants: dict[str, Any]
    order: Callable[[dict[str, Any]], tuple[Any, ...]] | None

    def parameters(self, rows: Sequence[Mapping[str, Any]], shared: Mapping[str, Any]
                   ) -> list[Any]:
        """Each row's parameters as the driver takes them: a tuple (qmark) or a dict."""
        base = {**self.constants, **shared}
        merged = [base | row for row in rows]
        return merged if self.order is None else [self.order(row) for row in merged]


class Prepared:
    """One Core statement on a hot path, compiled once per dialect and run through the driver.

    SQLAlchemy builds, keys and looks up a statement's compiled form and processes every
    row's parameters in Python on each execution; here a statement is compiled once and a
    row of parameters is one dict merge (and for SQLite one itemgetter) away from the driver.
    Parameters are named with bindparam(). Values reach the driver as they are, without
    SQLAlchemy's type processing: for columns of plain types (text, numbers, booleans, NULL).
    """

    def __init__(self, statement: Executable):
        self.statement = statement
        self._compiled: dict[tuple[Dialect, bool], _DriverStatement] = {}

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]],
                 **shared: Any) -> int:
        """executemany: once for every row of `rows` (plus the values `shared` by all of
        them); return the rows the database changed."""
        if not rows:
            return 0
        compiled = self._for(conn.dialect, many=True)
        return conn.exec_driver_sql(compiled.sql, compiled.parameters(rows, shared)).rowcount

    def rows(self, conn: Connection, **params: Any) -> Sequence[Row[Any]]:
        """Execute once with `params`; return the rows it gives (SELECT, RETURNING)."""
        compiled = self._for(conn.dialect, many=False)
        return conn.exec_driver_sql(compiled.sql, compiled.parameters([{}], params)[0]).all()

    def _for(self, dialect: Dialect, *, many: bool) -> _DriverStatement:
        return self._compiled.get((dialect, many)) or self._compile(dialect, many)

    def _compile(self, dialect: Dialect, many: bool) -> _DriverStatement:
        # for_executemany: as SQLAlchemy's own executemany, without the RETURNING of the new
        # primary key that PostgreSQL's single-row INSERT carries.
        compiled = self.statement.compile(dialect=dialect, for_executemany=many)
        constants = {name: bind.effective_value for bind, name in compiled.bind_names.items()
                     if not bind.required}
        positions = compiled.positiontup
        order = None if positions is None else _tuple_getter(positions)
        driver = _DriverStatement(compiled.string, constants, order)
        self._compiled[(dialect, many)] = driver
        return driver


def _tuple_getter(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function that picks `names` out of a dict, in order, as a tuple (even for one)."""
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return itemgetter(*names)
