"""evaluators.checks: the shared argument checks (nas.settings uses the same ones)."""

from __future__ import annotations

import math

import pytest

from evaluators.checks import at_least, check_int, check_number, in_range


def test_bools_are_not_numbers_and_errors_name_the_rule():
    for fn in (lambda v: check_int("n", v), lambda v: check_number("x", v), lambda v: at_least("k", v),
               lambda v: in_range("r", v, low=0)):
        with pytest.raises(ValueError, match="True"):
            fn(True)
    with pytest.raises(ValueError, match=r"folds=1 must be an integer >= 2"):
        at_least("folds", 1, 2)
    with pytest.raises(ValueError, match=r"lr=0 must be in \(0, 1\]"):
        in_range("lr", 0, low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match="must be a finite number"):
        check_number("x", math.nan)
    with pytest.raises(ValueError, match=r"n=5 must be an integer <= 4"):
        check_int("n", 5, maximum=4)
    assert check_int("n", None, optional=True) is None and at_least("k", 3) == 3 and in_range("r", 1, low=0) == 1.0


def test_nas_settings_uses_the_same_checks():
    import nas.settings

    assert nas.settings.check_int is check_int and nas.settings.check_number is check_number
