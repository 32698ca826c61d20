"""A real server on the onnx backend answers like the torch network."""

import numpy as np
import torch

from model.bank import load_bank
from model.imageio import image_to_tensor
from model.stylize import stylize_tensor
from tests.app.service_helpers import decode, encode, photo


def test_onnx_backend_serves_styles_and_blends_like_torch(server_factory, tiny_bank):
    server = server_factory(tiny_bank, "onnx", backend="onnx", concurrency=1)
    bank = load_bank(tiny_bank)
    source = photo(46, 30, seed=3)
    for spec, weights in (("alpha", [1.0, 0.0, 0.0]), ("beta:1,gamma:3", [0.0, 0.25, 0.75])):
        response = server.client.post("/v1/stylize", params={"style": spec},
                                      files={"image": ("p.png", encode(source), "image/png")})
        assert response.status_code == 200, response.text
        served = np.asarray(decode(response.content), dtype=np.int16)
        expected = stylize_tensor(bank.network, image_to_tensor(source), torch.tensor([weights]))
        expected = (expected[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
        assert served.shape == expected.shape == (30, 46, 3)
        assert np.abs(served - expected).max() <= 1  # float differences may flip a rounding
    assert "backend onnx" in server.log()
    assert server.client.get("/readyz").json()["backend"] == "onnx"


def test_torch_backend_can_be_chosen(server_factory, tiny_bank):
    server = server_factory(tiny_bank, "torch", backend="torch", concurrency=1)
    assert server.client.get("/readyz").json()["backend"] == "torch"
