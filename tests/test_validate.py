"""validate.py: each rule returns the cleaned value or one line `<name>: got <value>; expected <what>`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from globalmask.validate import (
    SettingError,
    boolean,
    check_fields,
    check_keys,
    check_namespace,
    choice,
    flag,
    integer,
    number,
    optional,
    real,
    sequence,
)


def message(rule, value, name="x") -> str:
    with pytest.raises(SettingError) as err:
        rule(value, name)
    return str(err.value)


def test_numbers_are_cleaned_and_bounds_are_inclusive_unless_open():
    assert integer(1, 5)("3", "n") == 3 and integer(1, 5)(5.0, "n") == 5 and isinstance(integer()(2.0, "n"), int)
    assert real(0.0, 1.0)(1, "p") == 1.0 and real(0.0, 1.0)("0.25", "p") == 0.25
    assert message(integer(1, 5), 6, "train.steps") == "train.steps: got 6; expected an integer >= 1 and <= 5"
    assert message(integer(1), 2.5) == "x: got 2.5; expected an integer >= 1"
    assert message(integer(), "3.5") == "x: got '3.5'; expected an integer"
    assert (
        message(real(0.0, 1.0, hi_open=True), 1.0, "dropout") == "dropout: got 1; expected a finite number >= 0 and < 1"
    )
    assert message(real(0.0, lo_open=True), 0, "lr") == "lr: got 0; expected a finite number > 0"
    for bad in (math.nan, math.inf, None, True, "abc", [1]):
        assert "expected a finite number" in message(real(), bad)
    assert message(integer(hi=10**6), 10**6 + 1) == "x: got 1000001; expected an integer <= 1e6"
    assert number(7, "n", lo=7, hi=7) == 7


def test_sequences_check_their_length_and_each_item():
    spacing = sequence(real(0.0, lo_open=True), 3, "spacings in mm")
    assert spacing([1, "2", 3.5], "s") == (1.0, 2.0, 3.5)
    assert message(spacing, [1, 2], "s") == "s: got 1 2; expected 3 spacings in mm"
    assert message(spacing, [1, 0, 2], "s") == "s: got 1 0 2; expected 3 spacings in mm, each a finite number > 0"
    assert message(spacing, "1 2 3", "s") == "s: got '1 2 3'; expected 3 spacings in mm"
    assert message(spacing, [], "s") == "s: got nothing; expected 3 spacings in mm"
    ranged = sequence(integer(1), (2, 4))
    assert ranged((1, 2), "c") == (1, 2) and "2 to 4 values" in message(ranged, [1])
    assert "at least 1 values" in message(sequence(integer(), (1, None)), [])


def test_choices_optionals_keys_fields_and_flags():
    assert choice(["ct", "gbm"])("gbm", "mode") == "gbm"
    assert message(choice(["ct", "gbm"]), "mr", "mode") == "mode: got 'mr'; expected one of ct, gbm"
    assert optional(integer(1))(None, "n") is None and optional(integer(1))(2, "n") == 2
    check_keys({"a": 1}, ["a", "b"], "net settings")
    with pytest.raises(SettingError, match=r"^net settings: unknown setting\(s\) c, d; known: a, b$"):
        check_keys({"a": 1, "c": 2, "d": 3}, ["a", "b"], "net settings")
    with pytest.raises(SettingError, match="expected a mapping of settings, got list"):
        check_keys([1], ["a"], "study.yaml")
    assert check_fields({"lr": "0.5"}, {"lr": real(0.0)}, "train.") == {"lr": 0.5}
    assert "train.lr: got -1" in message(
        lambda v, n: check_fields(SimpleNamespace(lr=v), {"lr": real(0.0)}, "train."), -1
    )
    assert flag("train_cases") == "argument --train-cases"
    check_namespace(SimpleNamespace(steps=None, lr=0.1), {"steps": integer(1), "lr": real(0.0), "absent": integer()})
    with pytest.raises(SettingError, match=r"^argument --train-cases: got 0; expected an integer >= 1$"):
        check_namespace(SimpleNamespace(train_cases=0), {"train_cases": integer(1)})


def test_booleans_are_true_or_false_only():
    assert boolean()(True, "amp") is True and boolean()(False, "amp") is False
    assert message(boolean(), "false", "study.yaml: amp") == "study.yaml: amp: got 'false'; expected true or false"
    assert message(boolean(), 1, "amp") == "amp: got 1; expected true or false"


def test_a_sequence_item_whose_text_holds_the_separator_gets_the_item_rule_in_the_message():
    """The item rule is read from its own message's last '; expected ': a value may contain those words."""
    ids = sequence(integer(1), 2, "case numbers")
    assert message(ids, ["1", "a; expected b"], "cases") == (
        "cases: got '1' 'a; expected b'; expected 2 case numbers, each an integer >= 1"
    )
