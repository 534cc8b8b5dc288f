"""Variants of the validation benchmark are parsed into typed TrainConfig overrides."""

from __future__ import annotations

import pytest

from bench.model_validation import parse_variant


def test_a_variant_types_each_value_like_its_field() -> None:
    name, overrides = parse_variant("v:half_life_days=90,min_instances=5,shrink_drift=1")
    assert name == "v"
    assert overrides == {"half_life_days": 90.0, "min_instances": 5, "shrink_drift": 1.0}
    assert isinstance(overrides["min_instances"], int)


def test_a_tuple_field_takes_values_split_by_semicolons() -> None:
    _, overrides = parse_variant("fixed:shrink_grid=0;10,share_grid=1,categorical=source")
    assert overrides == {
        "shrink_grid": (0.0, 10.0),
        "share_grid": (1.0,),
        "categorical": ("source",),
    }


def test_an_unknown_field_stops_with_its_name() -> None:
    with pytest.raises(SystemExit, match="no field 'nope'"):
        parse_variant("v:nope=1")
