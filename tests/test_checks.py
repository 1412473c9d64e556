"""One message for every factory table: ``unknown KIND 'x'; available: a, b, c`` (provex.checks)."""

from __future__ import annotations

import re

import pytest

import provex
from provex.checks import choose, unknown


def test_choose_returns_the_entry_and_refuses_an_unknown_name_listing_the_table():
    table = {"b": 2, "a": 1}
    assert choose("thing", "a", table) == 1
    assert choose("thing", "x", ["x", "y"]) == "x"
    with pytest.raises(ValueError) as err:
        choose("thing", "c", table)
    assert str(err.value) == "unknown thing 'c'; available: a, b"
    with pytest.raises(ValueError, match=r"^size: unknown thing \[1\]; available: a, b, or an int$"):
        choose("thing", [1], table, argument="size", also="an int")  # unhashable: refused, not a TypeError


def test_unknown_lists_each_name_once_sorted():
    assert str(unknown("rule", "z", ["b", "a", "b"])) == "unknown rule 'z'; available: a, b"


def _listed(message: str) -> set[str]:
    return set(re.search(r"available: (.*)$", message).group(1).split(", "))


@pytest.mark.parametrize(
    ("call", "kind", "table"),
    [
        (lambda: provex.registry.get_method("nope"), "method", lambda: provex.methods()),
        (lambda: provex.models.entry("nope"), "model", lambda: provex.models.registered()),
        (lambda: __import__("provex.inverse", fromlist=["x"]).make_operator("nope"), "operator", None),
        (lambda: __import__("provex.stats", fromlist=["x"]).get_kernel("nope"), "kernel", None),
        (lambda: __import__("provex.data.samples", fromlist=["x"]).samples("nope"), "sample set", None),
    ],
)
def test_every_factory_uses_the_one_message(call, kind, table):
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(f"unknown {kind} 'nope'; available: ")
    if table is not None:
        assert _listed(msg) == set(table())
