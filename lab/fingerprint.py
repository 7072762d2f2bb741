"""Warehouse fingerprints and comparison, across engines (DuckDB files, PostgreSQL URLs).

The fingerprint of a warehouse is, for every table and view of the raw dataset and of every schema the dbt project's
nodes land in (from its manifest): its
columns (name, *logical* type), its row count and an order-independent content hash. It
compares content, not engines (ADR 0005, ADR 0011):

* types are logical (``integer``, ``float``, ``decimal``, ``text``, ``boolean``, ``date``,
  ``timestamp``, ``timestamptz``, ...): DuckDB's ``BIGINT`` and PostgreSQL's ``bigint``, or
  ``VARCHAR`` and ``character varying``, are the same column;
* every value has one canonical text, computed in SQL by each engine the same way: integers in
  decimal; floats and decimals rounded half away from zero to 6 decimals and written with exactly
  6 (``41.130473``), so that the last bits of a float (a sum in another order, another engine's
  arithmetic) do not count; booleans ``true``/``false``; dates ``YYYY-MM-DD``; timestamps
  ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC; NULL ``\\N``; columns joined by the unit separator
  (U+001F);
* the hash is the sum of the first 64 bits of each row text's md5 (order-independent;
  duplicates count), modulo 2**128.

Left out, because they differ between two correct runs (ADR 0005):

* dlt's bookkeeping tables ``_dlt_loads``, ``_dlt_pipeline_state``, ``_dlt_version`` and the
  ``raw_staging`` schema dlt uses for merges;
* the run-specific columns ``_dlt_load_id`` (a timestamp) and ``_dlt_id`` (random).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.failures import NotAWarehouseError, WarehouseNotFoundError

EXCLUDED_TABLES = ("_dlt_loads", "_dlt_pipeline_state", "_dlt_version")
EXCLUDED_COLUMNS = ("_dlt_load_id", "_dlt_id")
FLOAT_DECIMALS = 6
NULL = "\\N"
SEPARATOR_CODE = 31  # ASCII unit separator between the columns of a row's text


def warehouse_schemas() -> list[str]:
    """Every schema the project writes: the raw dataset and each schema its dbt nodes land in
    (read from the manifest, never from names: a model anywhere is compared)."""
    from core import dbt

    return [settings.RAW_SCHEMA, *dbt.node_schemas()]


_INTEGER = {
    "tinyint", "smallint", "integer", "int", "bigint", "hugeint", "utinyint", "usmallint",
    "uinteger", "ubigint", "uhugeint", "int2", "int4", "int8",
}  # fmt: skip
_FLOAT = {"double", "float", "real", "double precision", "float4", "float8"}
_TEXT = {"varchar", "text", "character varying", "character", "char", "bpchar", "string"}


def logical_type(engine_type: str) -> str:
    """The engine-independent type of a column, from information_schema's ``data_type``."""
    t = engine_type.strip().lower()
    base = t.split("(", 1)[0].strip()
    if base in _INTEGER:
        return "integer"
    if base in _FLOAT:
        return "float"
    if base in ("decimal", "numeric"):
        return "decimal"
    if base in _TEXT:
        return "text"
    if base in ("boolean", "bool"):
        return "boolean"
    if base == "date":
        return "date"
    if base in ("timestamp with time zone", "timestamptz"):
        return "timestamptz"
    if base.startswith("timestamp"):
        return "timestamp"
    if base.startswith("time"):
        return "time"
    if base in ("json", "jsonb"):
        return "json"
    if base in ("blob", "bytea"):
        return "binary"
    return base


@dataclass(frozen=True)
class TablePrint:
    columns: tuple[tuple[str, str], ...]
    rows: int
    hash: str

    def to_json(self) -> dict:
        return {"columns": [list(c) for c in self.columns], "rows": self.rows, "hash": self.hash}


@dataclass
class Fingerprint:
    path: str  #: the DuckDB file, or the PostgreSQL URL with its password masked
    tables: dict[str, TablePrint] = field(default_factory=dict)
    location: str | None = field(default=None, repr=False, compare=False)  #: what to connect to

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "tables": {k: v.to_json() for k, v in sorted(self.tables.items())},
        }

    def digest(self) -> str:
        body = json.dumps({k: v.to_json() for k, v in sorted(self.tables.items())}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- engines


class _Engine:
    """One connection to a warehouse; each engine renders values the same canonical way."""

    placeholder = "?"

    def query(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def render(self, column: str, kind: str) -> str:
        raise NotImplementedError

    def md5_prefix_sum(self, rows_sql: str) -> str:
        raise NotImplementedError

    def tables(self) -> list[tuple[str, str]]:
        schemas = warehouse_schemas()
        marks = ", ".join(self.placeholder for _ in schemas)
        rows = self.query(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in ({marks}) order by 1, 2",
            list(schemas),
        )
        return [(s, t) for s, t in rows if t not in EXCLUDED_TABLES]

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        p = self.placeholder
        rows = self.query(
            "select column_name, data_type from information_schema.columns "
            f"where table_schema = {p} and table_name = {p} order by ordinal_position",
            [schema, table],
        )
        return [(c, logical_type(t)) for c, t in rows if c not in EXCLUDED_COLUMNS]

    def row_text(self, columns: list[tuple[str, str]]) -> str:
        if not columns:
            return "''"
        parts = [f"coalesce({self.render(_quote(c), k)}, '{NULL}')" for c, k in columns]
        return f" || chr({SEPARATOR_CODE}) || ".join(parts)

    def table_print(self, schema: str, table: str) -> TablePrint:
        columns = self.columns(schema, table)
        rows_sql = (
            f"select md5({self.row_text(columns)}) as h from {_quote(schema)}.{_quote(table)}"
        )
        rows, total = self.query(
            f"select count(*), coalesce(sum({self.md5_prefix_sum('h')}), 0) from ({rows_sql}) r"
        )[0]
        return TablePrint(
            columns=tuple(columns), rows=int(rows), hash=f"{int(total) % 2**128:032x}"
        )

    def row_hashes(self, schema: str, table: str, columns: list[tuple[str, str]]) -> Counter:
        sql = f"select md5({self.row_text(columns)}) from {_quote(schema)}.{_quote(table)}"
        return Counter(h for (h,) in self.query(sql))

    def rows_with_hashes(
        self, schema: str, table: str, columns: list[tuple[str, str]], hashes: list[str]
    ) -> list[tuple]:
        if not hashes:
            return []
        rendered = ", ".join(self.render(_quote(c), k) for c, k in columns)
        marks = ", ".join(self.placeholder for _ in hashes)
        return self.query(
            f"select {rendered} from {_quote(schema)}.{_quote(table)} "
            f"where md5({self.row_text(columns)}) in ({marks})",
            hashes,
        )


class _DuckDB(_Engine):
    def __init__(self, path: Path) -> None:
        import duckdb

        if not path.exists():
            raise WarehouseNotFoundError(
                f"warehouse {path} does not exist (run the pipeline first)"
            )
        try:
            self.con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            if "not a valid DuckDB database" in str(exc):
                raise NotAWarehouseError(
                    f"{path} is not a DuckDB database: give a warehouse/<name>.duckdb file a run "
                    "wrote, or a postgresql:// URL"
                ) from None
            raise NotAWarehouseError(f"warehouse {path} cannot be opened: {exc}") from None
        self.con.execute("set TimeZone = 'UTC'")

    def query(self, sql, params=()):
        return self.con.execute(sql, list(params)).fetchall()

    def close(self):
        self.con.close()

    def render(self, column: str, kind: str) -> str:
        if kind == "integer":
            return f"cast({column} as varchar)"
        if kind in ("float", "decimal"):
            return f"cast(round(cast({column} as decimal(38, 12)), {FLOAT_DECIMALS}) as varchar)"
        if kind == "text":
            return column
        if kind == "boolean":
            return f"case when {column} then 'true' when not {column} then 'false' end"
        if kind == "date":
            return f"strftime({column}, '%Y-%m-%d')"
        if kind in ("timestamp", "timestamptz"):
            return f"strftime({column}, '%Y-%m-%d %H:%M:%S.%f')"
        return f"cast({column} as varchar)"

    def md5_prefix_sum(self, h: str) -> str:
        return f"cast(cast('0x' || substr({h}, 1, 16) as ubigint) as hugeint)"


class _Postgres(_Engine):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        import psycopg2

        from lab.postgres import mask

        try:
            self.con = psycopg2.connect(url, connect_timeout=10, options="-c TimeZone=UTC")
        except psycopg2.OperationalError as exc:
            text = str(exc).strip()
            if "does not exist" in text:
                raise WarehouseNotFoundError(
                    f"warehouse {mask(url)} does not exist: {' '.join(text.split())}"
                ) from None
            from core.failures import WarehouseConnectionError

            raise WarehouseConnectionError(
                f"warehouse {mask(url)} cannot be read: {' '.join(text.split()) or repr(exc)}"
            ) from None
        self.con.set_session(readonly=True, autocommit=True)

    def query(self, sql, params=()):
        with self.con.cursor() as cur:
            cur.execute(sql, list(params) if params else None)
            return cur.fetchall()

    def close(self):
        self.con.close()

    def render(self, column: str, kind: str) -> str:
        if kind == "integer":
            return f"cast({column} as text)"
        if kind in ("float", "decimal"):
            return f"cast(round(cast({column} as numeric), {FLOAT_DECIMALS}) as text)"
        if kind == "text":
            return column
        if kind == "boolean":
            return f"case when {column} then 'true' when not {column} then 'false' end"
        if kind == "date":
            return f"to_char({column}, 'YYYY-MM-DD')"
        if kind in ("timestamp", "timestamptz"):
            return f"to_char({column}, 'YYYY-MM-DD HH24:MI:SS.US')"
        return f"cast({column} as text)"

    def md5_prefix_sum(self, h: str) -> str:
        # two unsigned 32-bit halves: bit(32) -> bigint is unsigned, bit(64) -> bigint is not
        return (
            f"(cast(cast(('x' || substr({h}, 1, 8)) as bit(32)) as bigint)::numeric * 4294967296"
            f" + cast(cast(('x' || substr({h}, 9, 8)) as bit(32)) as bigint))"
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.split("://", 1)[0] in ("postgresql", "postgres")


def _open(location: Path | str) -> _Engine:
    return _Postgres(location) if _is_url(location) else _DuckDB(Path(location))


def _shown(location: Path | str) -> str:
    if _is_url(location):
        from lab.postgres import mask

        return mask(location)
    return str(location)


def fingerprint(location: Path | str) -> Fingerprint:
    """The fingerprint of a DuckDB warehouse file or a PostgreSQL warehouse URL."""
    engine = _open(location)
    try:
        result = Fingerprint(
            path=_shown(location), location=str(location) if _is_url(location) else None
        )
        if not _is_url(location):
            result.location = str(Path(location))
        for schema, table in engine.tables():
            result.tables[f"{schema}.{table}"] = engine.table_print(schema, table)
        return result
    finally:
        engine.close()


@dataclass
class TableDiff:
    table: str
    problem: str
    only_left: list[tuple] = field(default_factory=list)
    only_right: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "table": self.table,
            "problem": self.problem,
            "columns": self.columns,
            "only_left": [[str(v) for v in row] for row in self.only_left],
            "only_right": [[str(v) for v in row] for row in self.only_right],
        }


def _name(fp: Fingerprint) -> str:
    return fp.path.rsplit("/", 1)[-1] or fp.path


def diff(left: Fingerprint, right: Fingerprint, *, samples: int = 5) -> list[TableDiff]:
    """What differs between two warehouses (any engines), with sample rows per table.

    Samples are found by row hash: each side's multiset of row md5s, minus the other's; the
    rows behind the first few are read back in their canonical rendering.
    """
    diffs: list[TableDiff] = []
    for table in sorted(set(left.tables) | set(right.tables)):
        a, b = left.tables.get(table), right.tables.get(table)
        if a is None or b is None:
            diffs.append(TableDiff(table, f"only in {_name(right if a is None else left)}"))
        elif a.columns != b.columns:
            diffs.append(
                TableDiff(table, f"columns differ: {list(a.columns)} vs {list(b.columns)}")
            )
        elif a != b:
            diffs.append(TableDiff(table, f"content differs: {a.rows:,} rows vs {b.rows:,} rows"))
    content = [d for d in diffs if d.problem.startswith("content")]
    if content and left.location and right.location:
        engines = (_open(left.location), _open(right.location))
        try:
            for d in content:
                schema, table = d.table.split(".", 1)
                columns = list(left.tables[d.table].columns)
                d.columns = [c for c, _ in columns]
                hashes = [e.row_hashes(schema, table, columns) for e in engines]
                for attr, side, other in (("only_left", 0, 1), ("only_right", 1, 0)):
                    extra = list((hashes[side] - hashes[other]).keys())[:samples]
                    rows = engines[side].rows_with_hashes(schema, table, columns, extra)
                    setattr(d, attr, rows[:samples])
        finally:
            for engine in engines:
                engine.close()
    return diffs


def describe_diffs(left: str, right: str, diffs: list[TableDiff]) -> str:
    """Sample rows per differing table; rows with the same key (first column) show only what differs."""
    lines = []
    for d in diffs:
        lines.append(f"  {d.table}: {d.problem}")
        right_by_key = {row[0]: row for row in d.only_right}
        for row in d.only_left:
            other = right_by_key.pop(row[0], None)
            if other is not None:
                changed = [
                    f"{c}: {a!r} in {left}, {b!r} in {right}"
                    for c, a, b in zip(d.columns, row, other, strict=False)
                    if a != b
                ]
                lines.append(f"      {d.columns[0]}={row[0]!r}: " + "; ".join(changed))
            else:
                pairs = ", ".join(f"{c}={v!r}" for c, v in zip(d.columns, row, strict=False))
                lines.append(f"      only in {left}: {pairs}")
        for row in right_by_key.values():
            pairs = ", ".join(f"{c}={v!r}" for c, v in zip(d.columns, row, strict=False))
            lines.append(f"      only in {right}: {pairs}")
    return "\n".join(lines)
