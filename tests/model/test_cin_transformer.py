import pytest
import torch

from model.cin import ConditionalInstanceNorm2d
from model.transformer import TransformerConfig, TransformerNet
from tests.conftest import make_tiny_network


def _single_style_copy(network: TransformerNet, gamma_beta_for) -> TransformerNet:
    """A 1-style network with the same convs and gamma/beta rows given by ``gamma_beta_for``."""
    config = TransformerConfig.from_dict({**network.config.to_dict(), "n_styles": 1})
    single = TransformerNet(config)
    state = network.state_dict()
    for key in state:
        if key.endswith((".gamma", ".beta")):
            state[key] = gamma_beta_for(state[key]).unsqueeze(0)
    single.load_state_dict(state)
    return single.eval()


def test_one_hot_weights_equal_the_single_style():
    network = make_tiny_network()
    image = torch.rand(1, 3, 24, 20)
    for index in range(3):
        one_hot = torch.nn.functional.one_hot(torch.tensor([index]), 3).float()
        single = _single_style_copy(network, lambda rows, i=index: rows[i])
        with torch.no_grad():
            assert torch.allclose(network(image, one_hot), single(image, torch.ones(1, 1)), atol=1e-6)


def test_blend_equals_network_with_blended_gamma_beta():
    network = make_tiny_network()
    image = torch.rand(1, 3, 20, 28)
    weights = torch.tensor([[0.2, 0.5, 0.3]])
    blended = _single_style_copy(network, lambda rows: (weights @ rows)[0])
    with torch.no_grad():
        out = network(image, weights)
        assert torch.allclose(out, blended(image, torch.ones(1, 1)), atol=1e-6)
        # and the blend is really different from each pure style
        for index in range(3):
            assert not torch.allclose(out, network(image, torch.eye(3)[index : index + 1]), atol=1e-3)


def test_batch_rows_use_their_own_weights():
    network = make_tiny_network()
    image = torch.rand(1, 3, 16, 16).expand(2, 3, 16, 16)
    with torch.no_grad():
        out = network(image, torch.eye(3)[:2])
        assert torch.allclose(out[0], network(image[:1], torch.eye(3)[:1])[0], atol=1e-6)
        assert not torch.allclose(out[0], out[1], atol=1e-3)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 18)])
def test_output_keeps_the_input_size_and_range(size):
    network = make_tiny_network()
    with torch.no_grad():
        out = network(torch.rand(1, 3, *size), torch.eye(3)[:1])
    assert out.shape == (1, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_wrong_weight_shape_is_refused():
    norm = ConditionalInstanceNorm2d(4, 3)
    with pytest.raises(ValueError, match="style_weights must have shape"):
        norm(torch.rand(2, 4, 8, 8), torch.ones(2, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_styles": 0}, "n_styles"),
        ({"n_styles": 2, "channels": (4, 8)}, "channels"),
        ({"n_styles": 2, "channels": (4, 0, 8)}, "channels"),
        ({"n_styles": 2, "n_residual": -1}, "n_residual"),
        ({"n_styles": 2, "outer_kernel": 4}, "outer_kernel"),
        ({"n_styles": 2, "decoder_channels": (8,)}, "decoder_channels"),
        ({"n_styles": 2, "decoder_channels": (8, 0)}, "decoder_channels"),
    ],
)
def test_config_validation_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = TransformerConfig(n_styles=5, channels=(8, 16, 32), n_residual=2, outer_kernel=5)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TransformerConfig fields"):
        TransformerConfig.from_dict({**config.to_dict(), "width": 3})


def test_residual_dilation_round_trips_and_is_left_out_of_old_manifests():
    config = TransformerConfig(n_styles=2, channels=(4, 8, 8), n_residual=2, residual_dilation=2)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    assert "residual_dilation" not in TransformerConfig(n_styles=2).to_dict()  # saved banks stay identical
    network = TransformerNet(config)
    assert {block.second.conv.dilation for block in network.residuals} == {(2, 2)}
    assert network(torch.rand(1, 3, 30, 22), torch.eye(2)[:1]).shape == (1, 3, 30, 22)
    with pytest.raises(ValueError, match="residual_dilation"):
        TransformerConfig(n_styles=2, residual_dilation=0)


def test_decoder_channels_set_the_decoder_widths_and_round_trip():
    config = TransformerConfig(n_styles=3, channels=(8, 16, 16), n_residual=1, decoder_channels=(6, 4))
    network = TransformerNet(config)
    assert [layer.conv.out_channels for layer in network.decoder] == [6, 4]
    assert network.out_conv.in_channels == 4
    # Every decoder norm carries one gamma row per style at its own width.
    assert [layer.norm.gamma.shape for layer in network.decoder] == [(3, 6), (3, 4)]
    out = network(torch.rand(1, 3, 30, 22), torch.eye(3)[:1])
    assert out.shape == (1, 3, 30, 22)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["decoder_channels"] == [6, 4]


def test_mirrored_decoder_is_the_default_and_keeps_old_manifests_readable():
    config = TransformerConfig(n_styles=2, channels=(4, 8, 16))
    assert "decoder_channels" not in config.to_dict()  # banks saved before the field existed stay identical
    assert config.decoder_widths == (8, 4)
    assert [layer.conv.out_channels for layer in TransformerNet(config).decoder] == [8, 4]


def test_the_measured_forward_is_the_plain_forward_and_returns_its_statistics():
    from model.cin import moments

    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2d(5, 3)
    with torch.no_grad():
        norm.gamma.add_(torch.randn_like(norm.gamma))
        norm.beta.add_(torch.randn_like(norm.beta))
    x = torch.randn(2, 5, 9, 7) * 3 + 1
    x[1, 2] = 0.25  # a flat channel: variance 0, not a small negative number
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    with torch.no_grad():
        output, (mean, var) = norm.forward_measured(x, weights)
        expected_mean, expected_var = moments(x)
        assert torch.allclose(mean, expected_mean, atol=1e-5) and torch.allclose(var, expected_var, atol=1e-5)
        assert var.min().item() >= 0 and var[1, 2].item() < 1e-6
        assert torch.allclose(output, norm(x, weights), atol=1e-4)
        assert torch.allclose(output, norm(x, weights, (mean, var)), atol=1e-4)
        # other dtypes take the two-pass route, with the same answer
        output64, (mean64, var64) = norm.double().forward_measured(x.double(), weights.double())
        assert torch.allclose(output64.float(), output, atol=1e-4) and torch.allclose(var64.float(), var, atol=1e-5)


def test_given_statistics_fold_into_the_convolutions_of_a_single_image(monkeypatch):
    """A tile (one sample, given statistics) takes each norm into its convolution's weights; the result is
    what the separate norm gives, and what a batch (which keeps the norms separate) gives for that sample."""
    from model.transformer import ConvCIN

    network = make_tiny_network(n_styles=3).eval()
    folded = []
    original = ConvCIN._conv_with_norm_folded_in

    def counting(self, *args):
        folded.append(self)
        return original(self, *args)

    monkeypatch.setattr(ConvCIN, "_conv_with_norm_folded_in", counting)
    torch.manual_seed(1)
    image = torch.rand(2, 3, 40, 36)
    weights = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]])
    with torch.inference_mode():
        mean, var = network.norm_stats(image, weights)
        batch = network.forward_with_stats(image, weights, mean, var)
        assert folded == []  # two samples: the norms stay separate
        single = network.forward_with_stats(image[:1], weights[:1], mean[:1], var[:1])
        assert len(folded) == len(network.norm_layers())
        assert torch.allclose(single, batch[:1], atol=1e-5)
        assert torch.allclose(single, network(image[:1], weights[:1]), atol=1e-5)  # own statistics given back
