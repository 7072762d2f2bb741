"""core.failures: one answer to "may a retry help?", and one list of failures shown without a
traceback (the adapters' mappings are held against the same table in their own tests)."""

from __future__ import annotations

import pytest

from core import failures
from tests.failure_cases import CASES


@pytest.mark.parametrize(("case", "make", "retry"), CASES, ids=[c[0] for c in CASES])
def test_may_retry_answers_the_table(case, make, retry):
    assert failures.may_retry(make()) is retry, case


def test_the_root_cause_is_the_innermost_and_a_cycle_ends():
    outer = CASES[0][1]()
    assert type(failures.root_cause(outer)).__name__ == "HTTPError"
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a  # a cycle: the walk still ends
    assert len(list(failures.causes(a))) == 2


def test_every_error_type_quartet_raises_is_shown_without_a_traceback():
    own = [
        value
        for value in vars(failures).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == "core.failures"
    ]
    assert own and set(own) == set(failures.KNOWN)
