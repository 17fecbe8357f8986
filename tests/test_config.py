"""Configs serialize: to_dict / from_dict round trips, and what is not understood is refused."""

import json

import pytest

import geta
from geta.config import CONFIG_VERSION, from_dict, to_dict


def test_compressor_config_round_trips_through_json_with_nested_admm_targets():
    config = geta.CompressorConfig(
        bit_range=(3, 6),
        warmup=5,
        joint=0.4,
        saliency="taylor",
        admm=geta.AdmmConfig(
            granularity="group",
            update_every=50,
            targets={"0": geta.LayerTarget(0.5, 3), "2": geta.LayerTarget.binary()},
        ),
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["version"] == CONFIG_VERSION
    back = geta.CompressorConfig.from_dict(data)
    assert back == config
    assert isinstance(back.warmup, int) and isinstance(back.joint, float)  # int | float kept
    assert back.bit_range == (3, 6)  # a JSON list becomes the tuple again


def test_admm_config_with_one_target_for_every_layer_round_trips():
    config = geta.AdmmConfig(targets=geta.LayerTarget.ternary(0.2), rho=0.01)
    assert geta.AdmmConfig.from_dict(config.to_dict()) == config


def test_left_out_keys_take_their_defaults():
    assert geta.CompressorConfig.from_dict({"periods": 3}) == geta.CompressorConfig(periods=3)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"perchannel": True}, "unknown setting(s) perchannel"),
        ({"admm": {"granularty": "group"}}, "CompressorConfig.admm: unknown setting(s) granularty"),
        ({"periods": "five"}, "CompressorConfig.periods: expected int"),
        ({"per_channel": 1}, "CompressorConfig.per_channel: expected bool"),
        ({"bit_range": [2, 4, 8]}, "expected 2 values"),
        ({"version": CONFIG_VERSION + 1}, "newer than this geta reads"),
        ({"admm": {"granularity": "rows"}}, "granularity is one of weight, group"),
    ],
)
def test_what_is_not_understood_is_a_config_error_naming_it(data, message):
    with pytest.raises(geta.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        geta.CompressorConfig.from_dict(data)


def test_generic_functions_work_on_any_dataclass_config():
    data = to_dict(geta.AdmmConfig(steps=2))
    assert from_dict(geta.AdmmConfig, data).steps == 2
    with pytest.raises(geta.ConfigError, match="expected a table"):
        from_dict(geta.AdmmConfig, ["steps", 2])
