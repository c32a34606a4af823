"""model.py: the channels each input mode feeds the network, and the network settings it accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from globalmask.errors import GlobalmaskError
from globalmask.model import InputMode, NetConfig, build_network, check_mode, make_input


def test_each_mode_stacks_its_known_channels():
    ct = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 24.0
    gbm = (ct > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(make_input(InputMode.CT, ct, gbm), ct[None])
    np.testing.assert_array_equal(make_input(InputMode.GBM, ct, gbm), gbm[None].astype(np.float32))
    both = make_input(InputMode.CT_GBM, ct, gbm)
    assert both.shape == (2, 2, 3, 4) and both.dtype == np.float32
    np.testing.assert_array_equal(both[0], ct)
    np.testing.assert_array_equal(both[1], gbm)
    coords = make_input(InputMode.CT_COORDS, ct, gbm)
    assert coords.shape == (4, 2, 3, 4)
    # coordinate channels run from -1 to 1 along their own axis only
    np.testing.assert_allclose(coords[1][:, 0, 0], [-1.0, 1.0])
    np.testing.assert_allclose(coords[2][0, :, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(coords[3][0, 0, :], [-1.0, -1 / 3, 1 / 3, 1.0], atol=1e-6)
    assert np.ptp(coords[3][:, :, 2]) == 0  # constant across the other axes
    for mode in InputMode:
        assert make_input(mode, ct, gbm).shape[0] == mode.channels


def test_binary_and_intensity_channels_partition_the_image_channels():
    # GBM channels are never intensity-augmented; coordinate channels are neither
    assert (InputMode.CT.binary_channels, InputMode.CT.intensity_channels) == ([], [0])
    assert (InputMode.GBM.binary_channels, InputMode.GBM.intensity_channels) == ([0], [])
    assert (InputMode.CT_GBM.binary_channels, InputMode.CT_GBM.intensity_channels) == ([1], [0])
    assert (InputMode.CT_COORDS.binary_channels, InputMode.CT_COORDS.intensity_channels) == ([], [0])


def test_modes_parse_from_their_text_only():
    assert check_mode("ct+gbm") is InputMode.CT_GBM and InputMode.parse("gbm") == "gbm"
    for bad in ("CT", "ct gbm", None, 1):
        with pytest.raises(GlobalmaskError, match="choose one of ct, gbm, ct\\+gbm, ct\\+coords"):
            InputMode.parse(bad)


def test_net_config_checks_and_divisor():
    assert NetConfig(channels=(4, 8, 16), strides=(2, 3)).divisor == 6
    assert NetConfig.from_dict(NetConfig(channels=(4, 8), strides=(2,)).to_dict()) == NetConfig(
        channels=(4, 8), strides=(2,)
    )
    with pytest.raises(GlobalmaskError, match="one stride fewer"):
        NetConfig(channels=(4, 8, 16), strides=(2,))
    with pytest.raises(GlobalmaskError, match=r"net\.spatial_dims"):
        NetConfig(spatial_dims=4)
    with pytest.raises(GlobalmaskError, match="net settings"):
        NetConfig.from_dict({"channels": [4, 8], "strides": [2], "depth": 3})


@pytest.mark.parametrize("dims", [2, 3])
def test_network_maps_channels_and_keeps_the_patch_shape(dims):
    net = build_network(3, 5, NetConfig(spatial_dims=dims, channels=(4, 8), strides=(2,), num_res_units=0))
    shape = (8,) * dims
    with torch.no_grad():
        y = net(torch.zeros((1, 3, *shape)))
    assert tuple(y.shape) == (1, 5, *shape)


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of model.py asked for


def test_every_mode_gives_float32_channels_whatever_the_input_types():
    """The network's weights are float32: a float64 channel would fail (or silently slow) every forward pass."""
    ct, gbm = np.linspace(-1.0, 1.0, 24).reshape(2, 3, 4), (np.arange(24).reshape(2, 3, 4) % 2).astype(np.uint8)
    for mode in InputMode:
        stacked = make_input(mode, ct, gbm)
        assert stacked.dtype == np.float32, mode
    np.testing.assert_array_equal(make_input(InputMode.GBM, ct, gbm)[0], gbm)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"channels": [8]}, "net.channels: got 8; expected 2 to 10 channel counts (one per U-Net level)"),
        (
            {"channels": [8, 16], "strides": [5]},
            "net.strides: got 5; expected 1 to 9 strides, each an integer >= 1 and <= 4",
        ),
        ({"dropout": 1.0}, "net.dropout: got 1; expected a finite number >= 0 and < 1"),
        ({"dropout": 1.5}, "net.dropout: got 1.5; expected a finite number >= 0 and < 1"),
    ],
)
def test_net_settings_are_refused_naming_what_they_accept(settings, message):
    with pytest.raises(GlobalmaskError) as err:
        NetConfig(**settings)
    assert str(err.value) == message


def test_net_settings_at_their_limits_are_accepted():
    assert NetConfig(channels=(8, 16), strides=(4,), dropout=0.99).divisor == 4
