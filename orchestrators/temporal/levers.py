"""Speed levers: where this adapter departs from Temporal's and dbt's stock idiom to go faster.

``QUARTET_STOCK=1`` (:func:`core.settings.stock`) turns every lever off: the worker then runs
the samples' idiom as written, and a run still passes. Each lever says what it does, why, and
what it gained where it was measured (docs/adr/0009-temporal-adapter.md, the command with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from core import settings


@contextlib.contextmanager
def dbt_manifest_per_worker() -> Iterator[None]:
    """One parsed dbt Manifest per worker process, reused by every ``build_model``.

    Stock dbt parses the project (reading its files and partial-parse state) at every
    invocation, and the adapter invokes dbt once per model; inside
    :func:`core.dbt.reusing_manifest` the worker parses once, hands the Manifest to each later
    build (``dbtRunner(manifest=...)``) and skips the per-build JSON artifacts. A change to the
    project or to the profile's environment parses again at the next build.

    Measured: the 13 per-model builds of one run, interleaved in one process, 24.4 s with a
    parse in every build against 16.3 s with one kept Manifest (``quartet timeline temporal
    --no-doc`` for the run; the interleaved timing in the ADR).
    """
    if settings.stock():
        yield
        return
    from core import dbt

    with dbt.reusing_manifest():
        yield


@contextlib.contextmanager
def applied() -> Iterator[None]:
    """Every lever of a worker, for as long as it polls (none with QUARTET_STOCK=1)."""
    with dbt_manifest_per_worker():
        yield
