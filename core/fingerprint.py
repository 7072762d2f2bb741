"""Warehouse fingerprints and comparison.

The fingerprint of a warehouse is, for every table and view of the raw and dbt schemas: its
columns (name, type), its row count and an order-independent content hash. Left out, because
they differ between two correct runs (ADR 0005):

* dlt's bookkeeping tables ``_dlt_loads``, ``_dlt_pipeline_state``, ``_dlt_version`` and the
  ``raw_staging`` schema dlt uses for merges;
* the run-specific columns ``_dlt_load_id`` (a timestamp) and ``_dlt_id`` (random);
* the last bits of floating-point values: doubles are rounded to 6 decimals, so that a sum
  computed in another order by parallel aggregation does not count as a difference.

The hash is the sum of a 64-bit md5 of each row's text: order-independent, and duplicates count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from core import settings

SCHEMAS = (settings.RAW_SCHEMA, *settings.DBT_SCHEMAS)
EXCLUDED_TABLES = ("_dlt_loads", "_dlt_pipeline_state", "_dlt_version")
EXCLUDED_COLUMNS = ("_dlt_load_id", "_dlt_id")
FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")
FLOAT_DECIMALS = 6


@dataclass(frozen=True)
class TablePrint:
    columns: tuple[tuple[str, str], ...]
    rows: int
    hash: str

    def to_json(self) -> dict:
        return {"columns": [list(c) for c in self.columns], "rows": self.rows, "hash": self.hash}


@dataclass
class Fingerprint:
    path: str
    tables: dict[str, TablePrint] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "tables": {k: v.to_json() for k, v in sorted(self.tables.items())},
        }

    def digest(self) -> str:
        import hashlib

        body = json.dumps({k: v.to_json() for k, v in sorted(self.tables.items())}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


class WarehouseNotFoundError(FileNotFoundError):
    pass


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    if not path.exists():
        raise WarehouseNotFoundError(f"warehouse {path} does not exist (run the pipeline first)")
    return duckdb.connect(str(path), read_only=True)


def _tables(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> list[tuple[str, str]]:
    where_catalog = f"and table_catalog = '{catalog}'" if catalog else ""
    rows = con.execute(
        "select table_schema, table_name from information_schema.tables "
        f"where table_schema in ({', '.join(repr(s) for s in SCHEMAS)}) {where_catalog} "
        "order by 1, 2"
    ).fetchall()
    return [(s, t) for s, t in rows if t not in EXCLUDED_TABLES]


def _columns(con, schema: str, table: str, catalog: str | None = None) -> list[tuple[str, str]]:
    where_catalog = f"and table_catalog = '{catalog}'" if catalog else ""
    rows = con.execute(
        "select column_name, data_type from information_schema.columns "
        f"where table_schema = ? and table_name = ? {where_catalog} order by ordinal_position",
        [schema, table],
    ).fetchall()
    return [(c, t) for c, t in rows if c not in EXCLUDED_COLUMNS]


def _projection(columns: list[tuple[str, str]]) -> str:
    parts = []
    for name, kind in columns:
        quoted = f'"{name}"'
        parts.append(f"round({quoted}, {FLOAT_DECIMALS})" if kind in FLOAT_TYPES else quoted)
    return ", ".join(parts)


def fingerprint(path: Path | str) -> Fingerprint:
    path = Path(path)
    con = _connect(path)
    try:
        result = Fingerprint(path=str(path))
        for schema, table in _tables(con):
            columns = _columns(con, schema, table)
            rows, total = con.execute(
                f"select count(*), coalesce(sum(md5_number_lower(cast(row({_projection(columns)}) "
                f'as varchar))::hugeint), 0) from "{schema}"."{table}"'
            ).fetchone()
            result.tables[f"{schema}.{table}"] = TablePrint(
                columns=tuple(columns), rows=int(rows), hash=f"{int(total) % 2**128:032x}"
            )
        return result
    finally:
        con.close()


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


def diff(left: Fingerprint, right: Fingerprint, *, samples: int = 5) -> list[TableDiff]:
    """What differs between two warehouses, with sample rows (EXCEPT both ways) per table."""
    diffs: list[TableDiff] = []
    for table in sorted(set(left.tables) | set(right.tables)):
        a, b = left.tables.get(table), right.tables.get(table)
        if a is None or b is None:
            where = Path(right.path if a is None else left.path).name
            diffs.append(TableDiff(table, f"only in {where}"))
        elif a.columns != b.columns:
            diffs.append(
                TableDiff(table, f"columns differ: {list(a.columns)} vs {list(b.columns)}")
            )
        elif a != b:
            diffs.append(TableDiff(table, f"content differs: {a.rows:,} rows vs {b.rows:,} rows"))
    content = [d for d in diffs if d.problem.startswith("content")]
    if content:
        con = duckdb.connect()
        try:
            con.execute(f"attach '{left.path}' as l (read_only)")
            con.execute(f"attach '{right.path}' as r (read_only)")
            for d in content:
                schema, table = d.table.split(".", 1)
                columns = [c for c, _ in left.tables[d.table].columns]
                projection = _projection(list(left.tables[d.table].columns))
                d.columns = columns
                for attr, (x, y) in (("only_left", ("l", "r")), ("only_right", ("r", "l"))):
                    rows = con.execute(
                        f'select {projection} from {x}."{schema}"."{table}" except all '
                        f'select {projection} from {y}."{schema}"."{table}" limit {samples}'
                    ).fetchall()
                    setattr(d, attr, rows)
        finally:
            con.close()
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
