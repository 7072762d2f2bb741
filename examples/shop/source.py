"""The shop's dlt source: one CSV file per resource, read with dlt's filesystem source.

The files are the shop's export. Here a seeded generator writes it (the same rows on every
machine) into the project's state folder the first time a run asks for it; point
``SHOP_EXPORT_DIR`` at a folder of real files to load those instead. Each file is one resource
and one raw table, merged on its key: loading the same export twice changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import random
from pathlib import Path

import dlt
import pyarrow as pa
from dlt.sources.filesystem import FileItemDict, filesystem
from pyarrow import csv as arrow_csv

from core import settings
from core.project import SourceRequest

EXPORT_DIR_ENV = "SHOP_EXPORT_DIR"


def shop_source(request: SourceRequest):
    """Follows core.project.SourceFactory: the requested resources, from the export's files."""
    folder = export_folder()

    @dlt.source(name="shop")
    def shop():
        for name in request.resources:
            key = list(request.project.resource(name).primary_key)
            files = filesystem(bucket_url=folder.as_uri(), file_glob=f"{name}.csv")
            yield (
                (files | read_csv(key))
                .with_name(name)
                .apply_hints(primary_key=key, write_disposition="merge")
            )

    return shop()


@dlt.transformer
def read_csv(items: list[FileItemDict], key: list[str]):
    """Each CSV file as an Arrow table (dlt's filesystem readers, with pyarrow's CSV parser:
    typed columns, no pandas); the key's columns are not nullable, as dlt's merge key is."""
    for item in items:
        with item.open() as file:
            table = arrow_csv.read_csv(file)
        fields = [f.with_nullable(f.name not in key) for f in table.schema]
        yield table.cast(pa.schema(fields))


# -- the seeded export ----------------------------------------------------------------------------

SEED = 2013
CUSTOMERS, PRODUCTS, ORDERS = 400, 40, 3000
STORES = ["Philadelphia", "Brooklyn", "Chicago", "San Francisco", "New Orleans"]
FIRST_DAY = dt.date(2024, 1, 1)


def export_folder() -> Path:
    """The folder of the CSV files: SHOP_EXPORT_DIR, else the seeded export (written once)."""
    if os.environ.get(EXPORT_DIR_ENV):
        return Path(os.environ[EXPORT_DIR_ENV]).resolve()
    folder = settings.state_dir() / "export"
    if not (folder / "order_items.csv").exists():  # the last file written: the export is whole
        write_export(folder)
    return folder


def write_export(folder: Path) -> None:
    """Five CSV files of a year of a shop's orders, the same on every machine (seeded)."""
    rng = random.Random(SEED)
    tables: dict[str, list[dict]] = {
        "stores": [
            {
                "id": i + 1,
                "name": name,
                "opened_at": f"{2020 + i}-0{i + 1}-01",
                "tax_rate": 0.04 + i / 100,
            }
            for i, name in enumerate(STORES)
        ],
        "customers": [
            {"id": i, "name": f"Customer {i:04d}", "email": f"customer{i:04d}@example.com"}
            for i in range(1, CUSTOMERS + 1)
        ],
        "products": [
            {
                "sku": f"{kind[:3].upper()}-{i:03d}",
                "name": f"{kind} no. {i}",
                "type": kind,
                "price_cents": rng.randrange(300, 2500, 25),
            }
            for i in range(1, PRODUCTS + 1)
            for kind in [rng.choice(["beverage", "jaffle"])]
        ],
    }
    orders, items = [], []
    for order_id in range(1, ORDERS + 1):
        ordered = FIRST_DAY + dt.timedelta(days=rng.randrange(366))
        orders.append(
            {
                "id": order_id,
                "customer_id": rng.randint(1, CUSTOMERS),
                "store_id": rng.randint(1, len(STORES)),
                "ordered_at": ordered.isoformat(),
            }
        )
        for _ in range(rng.randint(1, 4)):
            items.append(
                {
                    "id": len(items) + 1,
                    "order_id": order_id,
                    "sku": rng.choice(tables["products"])["sku"],
                    "quantity": rng.randint(1, 3),
                }
            )
    tables["orders"], tables["order_items"] = orders, items
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("stores", "customers", "products", "orders", "order_items"):
        part = folder / f".{name}.csv.part"  # renamed into place: a reader never sees half a file
        with part.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(tables[name][0]))
            writer.writeheader()
            writer.writerows(tables[name])
        part.replace(folder / f"{name}.csv")
