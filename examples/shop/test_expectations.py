"""The shop's own expectations (what holds for every project is tests/projects'): the seeded
export lands whole, and the marts add up: every order's lines and tax, every customer's orders."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.helpers import in_project

PROJECT = Path(__file__).with_name("quartet.toml")


def test_the_marts_add_up_to_the_export(tmp_path: Path) -> None:
    warehouse = in_project(
        PROJECT,
        home=tmp_path,
        code="""
import json
from core import pipeline, settings
pipeline.run("bare", log=lambda _: None)
print("RESULT " + json.dumps(str(settings.for_pipeline("bare").warehouse)))
""",
    )
    with duckdb.connect(warehouse, read_only=True) as db:

        def one(sql: str):
            return db.execute(sql).fetchone()

        # the seeded export, whole: 400 customers, 3,000 orders, 5 stores
        assert one("select count(*) from shop_raw.customers") == (400,)
        assert one("select count(*) from shop_marts.orders") == (3000,)
        assert one("select count(distinct store_id) from shop_marts.orders") == (5,)
        # every line counted once in its order, every order once in its customer
        assert one("select sum(items) from shop_marts.orders") == one(
            "select count(*) from shop_raw.order_items"
        )
        assert one("select sum(lifetime_value_cents) from shop_marts.customers") == one(
            "select sum(subtotal_cents + tax_cents) from shop_marts.orders"
        )
        assert one("select sum(revenue_cents) from shop_marts.store_daily_revenue") == one(
            "select sum(subtotal_cents + tax_cents) from shop_marts.orders"
        )
