"""Every row of the methods table is a `knowpack.methods.Method`: the names, and the parameters of each
function as the protocol has them."""

from __future__ import annotations

import inspect

import pytest

from knowpack.methods import METHODS, Method, method_module

FUNCTIONS = [
    name for name, value in vars(Method).items() if inspect.isfunction(value) and not name.startswith("_")
]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_a_method(name):
    module = method_module(name)
    assert isinstance(module, Method)
    assert isinstance(module.WEIGHTS, str) and isinstance(module.Config, type)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_takes_the_protocols_parameters(name, function):
    expected = list(inspect.signature(getattr(Method, function)).parameters)[1:]  # less `self`
    assert list(inspect.signature(getattr(method_module(name), function)).parameters) == expected


def test_only_loki_shares_work_and_the_key_is_its_settings():
    assert all(method_module(name).shared_work({}) is None for name in METHODS if name != "loki")
    work = method_module("loki").shared_work({"prompts": "world_mc"})
    assert work.name == "attribution" and work.key["prompts"] == "world_mc"
    assert method_module("loki").shared_work({"positions": "rows.json"}) is None
