"""The reliability matrix in the suite: a subset of its cases for bare and every orchestrator.

Each pipeline gets a home of its own with a good January warehouse; every case must fail with
a message naming the culprit and leave the warehouse as it was (or, kill -9 of the whole tree,
be followed by a rerun that gives bare's fingerprint); the last good run must equal bare's; the
token must appear nowhere in the home. ``quartet reliability`` runs every case (docs/reliability.md).

One test per pipeline (``-k NAME`` selects one row, so that the rows can run in different
lanes): bare runs ``reliability.SUITE_CASES``; each orchestrator a wrong token, a malformed
record and one kill point, rotated so that the four cover dlt's extract, normalize and load and
the dbt build between them (``reliability.suite_cases``).
"""

from __future__ import annotations

import pytest

from core import settings
from lab import reliability
from tests.helpers import own_source_api


@pytest.mark.parametrize("name", settings.PIPELINE_NAMES)
def test_reliability_cases(name, source_api, bare_january, tmp_path):
    matrix = reliability.Matrix(
        name, tmp_path / name, source_api.url, source_api.token, own_source_api, bare_january
    )
    ok, why = matrix.good_run()
    assert ok, why
    cases = reliability.suite_cases(name)
    outcomes = [matrix.run(reliability.CASES[c], recover=c == cases[-1]) for c in cases]
    failed = [o for o in outcomes if not o.ok]
    assert not failed, "\n".join(f"{o.case}: {o}" for o in failed)
    assert outcomes[-1].recovered  # after all of them, a good run still equals bare
