"""Jobs against a real server: the slow path, cancel, queue limits, learning a style, restarts, kill -9."""

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image, ImageDraw

from model.imageio import image_to_tensor
from model.losses import gram_matrix, style_loss, target_grams
from tests.app.service_helpers import Server, decode, encode, error_of, photo

API_KEY = "s3cret-key"
AUTH = {"X-API-Key": API_KEY}
JOB_SETTINGS = dict(
    api_key=API_KEY,
    slow_steps=30,
    slow_time_limit_s=60,
    slow_max_side=256,
    max_output_side=256,
    learn_steps=20,
    learn_batch_size=1,
    learn_image_size=32,
    queue_size=1,
    job_workers=1,
)

pytestmark = pytest.mark.slow


def stripes(size: int = 64) -> Image.Image:
    """A painting with a strong, simple texture: diagonal red/blue/yellow stripes."""
    image = Image.new("RGB", (size, size), (250, 230, 40))
    draw = ImageDraw.Draw(image)
    for offset in range(-size, size, 12):
        draw.line([(offset, 0), (offset + size, size)], fill=(200, 20, 30), width=4)
        draw.line([(offset + 6, 0), (offset + 6 + size, size)], fill=(20, 40, 190), width=2)
    return image


@pytest.fixture(scope="module")
def content_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("content")
    for seed in range(2):
        photo(64, 64, seed=seed).save(folder / f"photo{seed}.png")
    return folder


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank, content_dir) -> Server:
    return server_factory(tiny_bank, "jobs", content_dir=content_dir, **JOB_SETTINGS)


def slow_post(client: httpx.Client, content: Image.Image, style: Image.Image, **params) -> httpx.Response:
    return client.post(
        "/v1/stylize",
        params=params,
        files={"image": ("photo.png", encode(content)), "style_image": ("painting.png", encode(style))},
    )


def follow(client: httpx.Client, job_id: str, timeout_s: float = 120.0) -> list[dict]:
    """Poll a job until it finishes; every state seen, in order."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(state)
        if state["status"] in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}")


def wait_status(client: httpx.Client, job_id: str, status: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] == status:
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {status}")


def relative_style_loss(vgg, image: Image.Image, style: Image.Image) -> float:
    targets = target_grams(vgg, image_to_tensor(style))
    with torch.no_grad():
        features = vgg(image_to_tensor(image), tuple(targets))
    return style_loss({k: gram_matrix(v) for k, v in features.items()}, targets, relative=True).item()


def test_slow_path_job_runs_queued_running_done(server):
    client = server.client
    content, painting = photo(48, 48), stripes()
    accepted = slow_post(client, content, painting)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == f"/v1/jobs/{job['id']}" and job["kind"] == "stylize"
    assert job["status"] in ("queued", "running") and job["progress"] < 1

    seen = [job, *follow(client, job["id"])]
    order = {"queued": 0, "running": 1, "done": 2}
    assert [order[s["status"]] for s in seen] == sorted(order[s["status"]] for s in seen)
    assert "running" in {s["status"] for s in seen} and seen[-1]["status"] == "done"
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(s["eta_s"] is not None for s in seen if s["status"] == "running" and s["progress"] > 0)
    assert seen[-1]["result_url"] == f"/v1/jobs/{job['id']}/result"

    result = client.get(seen[-1]["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    output = decode(result.content).convert("RGB")
    assert output.size == (48, 48)

    from model.vgg import load_vgg19

    vgg = load_vgg19()
    before, after = relative_style_loss(vgg, content, painting), relative_style_loss(vgg, output, painting)
    assert after < 0.5 * before, (before, after)


def test_slow_path_wait_returns_the_image(server):
    response = slow_post(server.client, photo(32, 32), stripes(), wait=60, format="jpeg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert decode(response.content).size == (32, 32)
    job = server.client.get(response.headers["location"]).json()
    assert job["status"] == "done" and job["id"] == response.headers["x-job-id"]


def test_slow_path_can_start_from_the_nearest_bank_blend(server):
    response = slow_post(server.client, photo(32, 32), stripes(), wait=60, init="nearest")
    assert response.status_code == 200, response.text
    job = server.client.get(response.headers["location"]).json()
    assert job["params"]["init"] == "nearest"
    blend = dict(item.split(":") for item in job["result"]["init_blend"].split(","))
    assert set(blend) <= {"alpha", "beta", "gamma"} and abs(sum(map(float, blend.values())) - 1) < 1e-6
    bad = slow_post(server.client, photo(32, 32), stripes(), init="somewhere")
    assert bad.status_code == 422 and "init" in bad.text


def test_queue_full_and_cancel(server):
    client = server.client
    long_job = slow_post(client, photo(256, 256), stripes()).json()  # seconds per step at this size
    wait_status(client, long_job["id"], "running")
    queued = slow_post(client, photo(32, 32), stripes())
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    full = slow_post(client, photo(32, 32), stripes())
    assert full.status_code == 429 and error_of(full)["code"] == "queue_full"
    assert int(full.headers["retry-after"]) >= 1

    cancelled = client.delete(f"/v1/jobs/{queued.json()['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    client.delete(f"/v1/jobs/{long_job['id']}")
    final = follow(client, long_job["id"], timeout_s=60)[-1]
    assert final["status"] == "cancelled" and final["progress"] < 1
    not_done = client.get(f"/v1/jobs/{long_job['id']}/result")
    assert not_done.status_code == 409 and "cancelled" in error_of(not_done)["message"]


def test_a_waiting_client_that_leaves_cancels_its_job(server):
    client = server.client
    before = client.get("/readyz").json()["jobs"]["cancelled"]
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/v1/stylize",
            params={"wait": 60},
            timeout=2.0,
            files={"image": ("p.png", encode(photo(256, 256))), "style_image": ("s.png", encode(stripes()))},
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = client.get("/readyz").json()["jobs"]
        if jobs["cancelled"] == before + 1 and jobs["running"] == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the abandoned job was not cancelled: {jobs}")


def test_job_ids_are_validated(server):
    client = server.client
    for path in (
        f"/v1/jobs/{uuid.uuid4().hex}",
        "/v1/jobs/not-a-job",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        f"/v1/jobs/{uuid.uuid4().hex}/result",
        "/v1/jobs/%2e%2e/result",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"
    assert client.delete(f"/v1/jobs/{uuid.uuid4().hex}").status_code == 404


def test_changing_the_bank_needs_the_api_key(server):
    client = server.client
    files = {"style_image": ("p.png", encode(stripes()))}
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        response = client.post("/v1/styles", data={"name": "nope"}, files=files, headers=headers)
        assert response.status_code == 401, headers
        assert error_of(response)["code"] == "unauthorized"
    assert client.delete("/v1/styles/alpha").status_code == 401
    assert "nope" not in [s["name"] for s in client.get("/v1/styles").json()["styles"]]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("../evil", 422),
        ("/etc/passwd", 422),
        ("Bad Name", 422),
        ("x" * 65, 422),
        ("", 422),
        ("alpha", 409),
    ],
)
def test_bad_style_names_are_refused(server, name, status):
    response = server.client.post(
        "/v1/styles", data={"name": name}, headers=AUTH, files={"style_image": ("p.png", encode(stripes()))}
    )
    assert response.status_code == status, response.text
    error_of(response)
    data_root = server.data_dir.parent
    assert not list(data_root.rglob("evil*")) and not list(data_root.rglob("passwd*"))


def test_learn_style_without_image_or_with_a_bad_one(server):
    missing = server.client.post("/v1/styles", data={"name": "lonely"}, headers=AUTH)
    assert missing.status_code in (415, 422)
    broken = server.client.post(
        "/v1/styles", data={"name": "broken"}, headers=AUTH, files={"style_image": ("p.png", b"not an image")}
    )
    assert broken.status_code == 400 and error_of(broken)["code"] == "invalid_image"


def test_learned_style_is_usable_survives_restart_and_can_be_removed(server):
    client = server.client
    learn = client.post(
        "/v1/styles",
        data={"name": "stripes"},
        files={"style_image": ("p.png", encode(stripes()))},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert learn.status_code == 202, learn.text
    assert learn.headers["location"] == f"/v1/jobs/{learn.json()['id']}"
    taken = client.post(
        "/v1/styles", data={"name": "stripes"}, headers=AUTH, files={"style_image": ("p.png", encode(stripes()))}
    )
    assert taken.status_code == 409  # being learned right now
    states = follow(client, learn.json()["id"])
    assert states[-1]["status"] == "done", states[-1]
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress)
    assert states[-1]["result"]["style"] == "stripes"

    styles = {s["name"]: s for s in client.get("/v1/styles").json()["styles"]}
    assert styles["stripes"]["kind"] == "learned" and styles["alpha"]["kind"] == "builtin"
    assert (server.data_dir / "styles" / "stripes.safetensors").is_file()
    single = client.post("/v1/stylize", params={"style": "stripes"}, files={"image": ("p.png", encode(photo()))})
    assert single.status_code == 200 and single.headers["x-style-weights"] == "stripes:1"
    blend = client.post(
        "/v1/stylize", params={"style": "alpha:1,stripes:3"}, files={"image": ("p.png", encode(photo()))}
    )
    assert blend.status_code == 200 and blend.headers["x-style-weights"] == "alpha:0.25,stripes:0.75"
    assert client.get("/v1/styles/stripes/preview").status_code == 200
    finished = slow_post(client, photo(32, 32), stripes(), wait=60)
    assert finished.status_code == 200
    result_id = finished.headers["x-job-id"]

    server.stop()
    server.start()
    client = server.client
    names = {s["name"]: s["kind"] for s in client.get("/v1/styles").json()["styles"]}
    assert names == {"alpha": "builtin", "beta": "builtin", "gamma": "builtin", "stripes": "learned"}
    again = client.post("/v1/stylize", params={"style": "stripes"}, files={"image": ("p.png", encode(photo()))})
    assert again.status_code == 200 and again.content == single.content
    assert client.get(f"/v1/jobs/{result_id}/result").content == finished.content
    assert client.get(f"/v1/jobs/{learn.json()['id']}").json()["status"] == "done"

    assert client.delete("/v1/styles/alpha", headers=AUTH).status_code == 409
    assert client.delete("/v1/styles/nothing", headers=AUTH).status_code == 404
    assert client.delete("/v1/styles/Bad.Name", headers=AUTH).status_code == 422
    assert client.delete("/v1/styles/stripes", headers=AUTH).status_code == 204
    gone = client.post("/v1/stylize", params={"style": "stripes"}, files={"image": ("p.png", encode(photo()))})
    assert gone.status_code == 422 and error_of(gone)["code"] == "unknown_style"
    assert not (server.data_dir / "styles" / "stripes.safetensors").exists()
    assert client.get("/v1/styles/stripes/preview").status_code == 404


def test_kill_9_while_learning_leaves_no_corrupt_file(server_factory, tiny_bank, content_dir):
    server = server_factory(tiny_bank, "killed", content_dir=content_dir, **{**JOB_SETTINGS, "learn_steps": 100_000})
    learn = server.client.post(
        "/v1/styles", data={"name": "doomed"}, headers=AUTH, files={"style_image": ("p.png", encode(stripes()))}
    )
    assert learn.status_code == 202
    job_id = learn.json()["id"]
    wait_status(server.client, job_id, "running")
    time.sleep(1.0)
    server.kill9()
    styles_dir = server.data_dir / "styles"
    assert not (styles_dir / "doomed.safetensors").exists()

    server.start()
    job = server.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and "interrupted" in job["error"]
    assert "doomed" not in [s["name"] for s in server.client.get("/v1/styles").json()["styles"]]
    assert [p.name for p in styles_dir.iterdir()] == []
    ok = server.client.post("/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", encode(photo()))})
    assert ok.status_code == 200


def test_a_learn_job_killed_after_its_style_was_stored_reads_done_after_restart(server_factory, tiny_bank, content_dir):
    """A kill between storing the style and recording the job leaves exactly this on disk: the job's record
    says running, and the style file names the job. The restarted server must agree with the disk: done."""
    server = server_factory(tiny_bank, "reconciled", content_dir=content_dir, **JOB_SETTINGS)
    learn = server.client.post(
        "/v1/styles", data={"name": "kept_by_disk"}, headers=AUTH, files={"style_image": ("p.png", encode(stripes()))}
    )
    job_id = learn.json()["id"]
    assert follow(server.client, job_id)[-1]["status"] == "done"
    server.kill9()
    record_path = server.data_dir / "jobs" / f"{job_id}.json"
    record = json.loads(record_path.read_text())
    record.update(status="running", finished_at=None, summary={}, progress=0.4)  # the record before the commit
    record_path.write_text(json.dumps(record))
    # a second interrupted learn job whose style never got stored stays a clear failure
    lost_id = uuid.uuid4().hex
    (server.data_dir / "jobs" / f"{lost_id}.json").write_text(
        json.dumps({**record, "id": lost_id, "params": {"name": "never_stored", "source_sha256": "0" * 64}})
    )

    server.start()
    job = server.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "done" and job["error"] is None and job["result"]["style"] == "kept_by_disk"
    lost = server.client.get(f"/v1/jobs/{lost_id}").json()
    assert lost["status"] == "failed" and "interrupted" in lost["error"]
    assert "kept_by_disk" in [s["name"] for s in server.client.get("/v1/styles").json()["styles"]]
    # learned files are readable by other users of a shared volume
    assert (server.data_dir / "styles" / "kept_by_disk.safetensors").stat().st_mode & 0o777 == 0o644
