"""503s: too many waiting (with Retry-After), and a server whose checkpoint cannot be loaded."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.app.service_helpers import Server, encode, error_of, photo


@pytest.mark.slow
def test_overload_gets_503_with_retry_after(server_factory, tiny_bank):
    server = server_factory(tiny_bank, "busy", concurrency=1, max_waiting=0, max_output_side=384)
    data = encode(photo(384, 384))  # big enough that requests overlap
    barrier_pool = ThreadPoolExecutor(16)

    def send(_: int):
        return server.client.post("/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", data)})

    responses = list(barrier_pool.map(send, range(16)))
    barrier_pool.shutdown()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert error_of(busy)["code"] == "overloaded"
    assert int(busy.headers["retry-after"]) >= 1
    metrics = server.client.get("/metrics").text
    assert "cinstyle_inference_rejected_total " in metrics
    assert "cinstyle_inference_in_flight_peak 1.0" in metrics


def test_bad_checkpoint_is_not_ready_but_alive(tmp_path):
    bank = tmp_path / "broken"
    bank.mkdir()
    (bank / "manifest.json").write_text(json.dumps({"format": "cinstyle-bank", "format_version": 1}))
    server = Server(bank, tmp_path / "data", tmp_path / "server.log").start(wait_ready=False)
    try:
        assert server.client.get("/healthz").status_code == 200
        ready = server.client.get("/readyz")
        for _ in range(100):  # loading happens in the background
            if "failed" in ready.text:
                break
            ready = server.client.get("/readyz")
        assert ready.status_code == 503
        error = error_of(ready)
        assert error["code"] == "not_ready" and "failed" in error["message"] and "bank" in error["message"]
        assert str(tmp_path) not in ready.text  # no server path reaches a client ...
        assert "manifest" in server.log() and str(bank) in server.log()  # ... the operator's log has it
        assert ready.headers["retry-after"]
        styles = server.client.get("/v1/styles")
        assert styles.status_code == 503 and error_of(styles)["code"] == "not_ready"
        stylize = server.client.post(
            "/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", encode(photo()))}
        )
        assert stylize.status_code == 503
    finally:
        server.stop()
