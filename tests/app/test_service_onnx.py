"""A real server on the onnx backend answers like the torch network."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.bank import load_bank
from model.imageio import image_to_tensor
from model.stylize import stylize_tensor
from tests.app.service_helpers import Server, decode, encode, error_of, photo


def test_onnx_backend_serves_styles_and_blends_like_torch(server_factory, tiny_bank):
    server = server_factory(tiny_bank, "onnx", backend="onnx", concurrency=1)
    bank = load_bank(tiny_bank)
    source = photo(46, 30, seed=3)
    for spec, weights in (("alpha", [1.0, 0.0, 0.0]), ("beta:1,gamma:3", [0.0, 0.25, 0.75])):
        response = server.client.post(
            "/v1/stylize", params={"style": spec}, files={"image": ("p.png", encode(source), "image/png")}
        )
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


def _fake_onnx_package(root: Path, source: str) -> Path:
    """A folder whose ``onnx`` package shadows the real one for a server subprocess."""
    (root / "onnx").mkdir(parents=True)
    (root / "onnx" / "__init__.py").write_text(source)
    return root


def test_auto_backend_serves_with_torch_when_onnx_is_missing(tmp_path, tiny_bank):
    # A fresh install once lacked the onnx package (torch's exporter needs it beside onnxruntime).
    hidden = _fake_onnx_package(tmp_path / "path", "raise ImportError('onnx hidden by the test')\n")
    server = Server(
        tiny_bank, tmp_path / "data", tmp_path / "server.log", python_path_first=hidden, concurrency=1
    ).start()
    try:
        assert server.client.get("/readyz").json()["backend"] == "torch"
        response = server.client.post(
            "/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", encode(photo()), "image/png")}
        )
        assert response.status_code == 200 and decode(response.content).size == photo().size
    finally:
        server.stop()


def test_asking_for_onnx_without_it_stops_with_the_install_command(tmp_path, tiny_bank):
    hidden = _fake_onnx_package(tmp_path / "path", "raise ImportError('onnx hidden by the test')\n")
    server = Server(tiny_bank, tmp_path / "data", tmp_path / "server.log", python_path_first=hidden, backend="onnx")
    with pytest.raises(RuntimeError, match="server exited") as failure:
        server.start(wait_ready=False)
    assert "pip install onnx onnxruntime" in str(failure.value)


def test_a_failed_onnx_export_is_reported_by_readyz_not_loading_forever(tmp_path, tiny_bank):
    # An onnx package that imports but is broken: the export fails after the bank has loaded.
    broken = _fake_onnx_package(tmp_path / "path", "# imports, but has none of onnx's functions\n")
    server = Server(
        tiny_bank, tmp_path / "data", tmp_path / "server.log", python_path_first=broken, backend="onnx", concurrency=1
    ).start(wait_ready=False)
    try:
        ready = server.client.get("/readyz")
        for _ in range(300):  # loading happens in the background
            if "failed" in ready.text:
                break
            time.sleep(0.1)
            ready = server.client.get("/readyz")
        assert ready.status_code == 503
        error = error_of(ready)
        assert error["code"] == "not_ready" and "loading the model failed" in error["message"]
        assert "onnx" in error["message"]
        assert server.client.get("/healthz").status_code == 200  # alive for diagnosis
    finally:
        server.stop()


def test_the_server_process_runs_with_huge_page_malloc(server_factory, tiny_bank):
    # `cinstyle serve` re-executes itself once with glibc's malloc asking for huge pages (model.cpu_memory).
    from model.cpu_memory import huge_page_malloc_environ

    server = server_factory(tiny_bank, "tunables", concurrency=1)
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{server.process.pid}/environ").read_text().split("\0") if entry
    )
    expected = huge_page_malloc_environ(server.env()) or server.env()
    assert environ.get("GLIBC_TUNABLES") == expected.get("GLIBC_TUNABLES")
    assert server.client.get("/readyz").status_code == 200  # and it serves after the re-exec
