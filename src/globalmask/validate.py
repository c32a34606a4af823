"""Argument and configuration checks that fail in one line: which setting, what was given, what is accepted.

Every check raises :class:`~globalmask.errors.GlobalmaskError` (exit status 2 in the CLI) with a
message of the form ``<name>: got <value>; expected <what is accepted>``, where ``<name>`` is
whatever the caller passes: ``argument --lr`` for the command line, ``train.lr`` for a config
field, ``study.yaml: steps`` for a YAML key. Rules are small callables ``rule(value, name)``
returning the cleaned value, so one table can check a config dataclass, an argparse namespace
(:func:`check_namespace`) and a YAML mapping alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from .errors import GlobalmaskError

Rule = Callable[[Any, str], Any]


class SettingError(GlobalmaskError):
    """A command-line argument or configuration value is out of range or malformed."""


def fail(name: str, value: Any, expected: str) -> NoReturn:
    """Raise the one-line :class:`SettingError` ``<name>: got <value>; expected <expected>``.

    Parameters
    ----------
    name : str
        The setting's name as the user knows it.
    value : Any
        What was given.
    expected : str
        What is accepted.

    Raises
    ------
    SettingError
        Always.
    """
    raise SettingError(f"{name}: got {_show(value)}; expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value) if value else "nothing"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if not math.isinf(value) else str(value)
    return repr(value) if isinstance(value, str) else str(value)


def _bounds(lo, hi, lo_open, hi_open) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_fmt(hi)}")
    return " and ".join(parts)


def _fmt(x) -> str:
    if isinstance(x, int) and abs(x) >= 10**6 and str(abs(x)).rstrip("0") == "1":
        return f"1e{len(str(abs(x))) - 1}" if x > 0 else f"-1e{len(str(abs(x))) - 1}"
    return f"{x:g}" if isinstance(x, float) else str(x)


def number(
    value: Any, name: str, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False, integer: bool = False
) -> int | float:
    """A finite number (an integer when ``integer``) within [lo, hi] (open ends on request).

    Parameters
    ----------
    value : Any
        What was given (a number or its text).
    name : str
        The setting's name in the message.
    lo, hi : float or None
        The bounds; None for none.
    lo_open, hi_open : bool
        Exclude the bound itself.
    integer : bool
        Require a whole number (returned as int).

    Returns
    -------
    int or float
        The value.
    """
    kind = "an integer" if integer else "a finite number"
    bounds = _bounds(lo, hi, lo_open, hi_open)
    expected = kind + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or value is None:
        fail(name, value, expected)
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        fail(name, value, expected)
    if not math.isfinite(x):
        fail(name, value, expected)
    if integer:
        if isinstance(value, float) and not value.is_integer():
            fail(name, value, expected)
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                fail(name, value, expected)
        x = int(value)
    if lo is not None and (x < lo or (lo_open and x == lo)):
        fail(name, value, expected)
    if hi is not None and (x > hi or (hi_open and x == hi)):
        fail(name, value, expected)
    return x


def integer(lo=None, hi=None) -> Rule:
    """A rule for an integer within [lo, hi].

    Parameters
    ----------
    lo, hi : int or None
        The bounds; None for none.

    Returns
    -------
    Rule
        ``rule(value, name) -> int``.
    """
    return lambda v, name: number(v, name, lo=lo, hi=hi, integer=True)


def real(lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A rule for a finite number within [lo, hi] (open ends on request).

    Parameters
    ----------
    lo, hi : float or None
        The bounds; None for none.
    lo_open, hi_open : bool
        Exclude the bound itself.

    Returns
    -------
    Rule
        ``rule(value, name) -> float``.
    """
    return lambda v, name: number(v, name, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def optional(rule: Rule) -> Rule:
    """None passes through (\"default\"); anything else must satisfy ``rule``.

    Parameters
    ----------
    rule : Rule
        The rule for values other than None.

    Returns
    -------
    Rule
        The rule, passing None through.
    """
    return lambda v, name: None if v is None else rule(v, name)


def sequence(rule: Rule, length: int | tuple[int, int | None] | None = None, what: str = "values") -> Rule:
    """A list/tuple of ``length`` (or a (min, max) range of lengths) items, each satisfying ``rule``.

    Parameters
    ----------
    rule : Rule
        The rule of each item.
    length : int or tuple or None
        The exact length, a (min, max) range (max None: no maximum), or None for any.
    what : str
        What the items are, in the message ('spacings in mm').

    Returns
    -------
    Rule
        ``rule(value, name) -> tuple``.
    """

    def check(v, name):
        lo, hi = (length, length) if isinstance(length, int) else (length or (0, None))
        count = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            fail(name, v, f"{count} {what}")
        items = list(v)
        if len(items) < lo or (hi is not None and len(items) > hi):
            fail(name, items, f"{count} {what}")
        try:
            return tuple(rule(item, name) for item in items)
        except SettingError as exc:
            each = str(exc).rsplit("; expected ", 1)[-1]
            fail(name, items, f"{count} {what}, each {each}")

    return check


def choice(options: Iterable[Any]) -> Rule:
    """A rule accepting only one of ``options``.

    Parameters
    ----------
    options : iterable
        The accepted values.

    Returns
    -------
    Rule
        ``rule(value, name)`` returning the value unchanged.
    """
    opts = list(options)

    def check(v, name):
        if v not in opts:
            fail(name, v, "one of " + ", ".join(str(o) for o in opts))
        return v

    return check


def boolean() -> Rule:
    """True or false, nothing else (YAML's ``yes`` is already a bool; the string ``"false"`` is not).

    Returns
    -------
    Rule
        ``rule(value, name) -> bool``.
    """

    def check(v, name):
        if not isinstance(v, bool):
            fail(name, v, "true or false")
        return v

    return check


def check_keys(mapping: Mapping, allowed: Iterable[str], where: str) -> None:
    """Refuse unknown keys (a typo in a YAML/JSON config would otherwise be silently ignored).

    Parameters
    ----------
    mapping : Mapping
        The settings.
    allowed : iterable of str
        The known keys.
    where : str
        What the message names ('train settings').
    """
    if not isinstance(mapping, Mapping):
        raise SettingError(f"{where}: expected a mapping of settings, got {type(mapping).__name__}")
    allowed = list(allowed)
    unknown = [str(k) for k in mapping if k not in allowed]
    if unknown:
        raise SettingError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(allowed)}")


def check_fields(obj: Any, rules: Mapping[str, Rule], prefix: str = "") -> dict[str, Any]:
    """Apply ``rules`` to attributes (or mapping items) of ``obj``; returns the cleaned values.

    Parameters
    ----------
    obj : Any
        A dataclass instance or a mapping.
    rules : Mapping[str, Rule]
        The rule per attribute.
    prefix : str
        Prepended to each name in messages ('net.').

    Returns
    -------
    dict[str, Any]
        The cleaned value per attribute.
    """
    out = {}
    for key, rule in rules.items():
        value = obj[key] if isinstance(obj, Mapping) else getattr(obj, key)
        out[key] = rule(value, f"{prefix}{key}")
    return out


def flag(dest: str) -> str:
    """argparse destination -> the flag the user typed: 'train_cases' -> 'argument --train-cases'.

    Parameters
    ----------
    dest : str
        The argparse destination.

    Returns
    -------
    str
        The name in messages.
    """
    return "argument --" + dest.replace("_", "-")


def check_namespace(args: Any, rules: Mapping[str, Rule]) -> None:
    """Apply ``rules`` to an argparse namespace, naming each argument as the user typed it.

    Parameters
    ----------
    args : Any
        The parsed arguments (values that are None are skipped).
    rules : Mapping[str, Rule]
        The rule per destination.
    """
    for dest, rule in rules.items():
        if hasattr(args, dest) and getattr(args, dest) is not None:
            rule(getattr(args, dest), flag(dest))
