"""POST /v1/textures against a real server: the job, its result's quality, wait and formats, bad input, the queue."""

import pytest

from model.imageio import image_to_tensor
from model.losses import gram_matrix, style_loss, target_grams
from model.slow import texture_noise
from tests.app.service_helpers import Server, decode, encode, error_of, photo
from tests.app.test_service_jobs import follow, stripes, wait_status

MAX_SIDE = 128
SETTINGS = dict(
    slow_steps=30,
    slow_time_limit_s=60,
    slow_max_side=MAX_SIDE,
    max_wait_s=120,
    queue_size=1,
    job_workers=1,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank) -> Server:
    return server_factory(tiny_bank, "textures", **SETTINGS)


def texture_post(server: Server, painting: bytes | None = None, **params):
    files = {"style_image": ("painting.png", painting if painting is not None else encode(stripes(64)))}
    return server.client.post("/v1/textures", params=params, files=files)


def gram_loss(vgg, image, painting, layers: tuple[str, ...]) -> float:
    targets = target_grams(vgg, image_to_tensor(painting), layers)
    features = vgg(image, layers)
    return style_loss({k: gram_matrix(v) for k, v in features.items()}, targets, relative=True).item()


def test_a_texture_job_runs_to_a_texture_of_the_painting(server, vgg):
    painting = stripes(64)
    accepted = texture_post(server, encode(painting), width=48, height=32, layers="relu3_1", seed=5)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == f"/v1/jobs/{job['id']}" and job["kind"] == "texture"
    assert job["params"] == {
        "width": 48,
        "height": 32,
        "layers": "relu3_1",
        "tileable": False,
        "seed": 5,
        "format": "png",
    }

    seen = [job, *follow(server.client, job["id"])]
    assert seen[-1]["status"] == "done", seen[-1]
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    result = server.client.get(seen[-1]["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    texture = decode(result.content).convert("RGB")
    assert texture.size == (48, 32)

    layers = ("relu1_1", "relu2_1", "relu3_1")
    with_noise = gram_loss(vgg, texture_noise(image_to_tensor(painting), (32, 48), 5), painting, layers)
    with_texture = gram_loss(vgg, image_to_tensor(texture), painting, layers)
    assert with_texture < 0.2 * with_noise, (with_noise, with_texture)


def test_wait_returns_the_image_in_the_chosen_format_and_a_seed_is_chosen(server):
    response = texture_post(server, width=32, height=40, layers="relu2_1", tileable="true", wait=120, format="webp")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert decode(response.content).size == (32, 40)
    job = server.client.get(response.headers["location"]).json()
    assert job["status"] == "done" and job["id"] == response.headers["x-job-id"]
    assert job["params"]["tileable"] is True and isinstance(job["params"]["seed"], int)


def test_the_same_seed_gives_the_same_texture(server):
    first, second = (texture_post(server, width=32, height=32, layers="relu2_1", seed=11, wait=120) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert decode(first.content).tobytes() == decode(second.content).tobytes()


@pytest.mark.parametrize(
    ("params", "status", "code", "says"),
    [
        ({"width": 15}, 422, "invalid_parameter", f"between 16 and {MAX_SIDE}"),
        ({"height": MAX_SIDE + 1}, 422, "invalid_parameter", f"between 16 and {MAX_SIDE}"),
        ({"layers": "relu4_2"}, 422, "invalid_parameter", "relu1_1"),
        ({"layers": "conv1_1"}, 422, "invalid_parameter", "relu5_1"),
        ({"seed": -1}, 422, "invalid_parameter", "seed"),
        ({"tileable": "maybe"}, 422, "invalid_parameter", "tileable"),
        ({"format": "bmp"}, 415, "unsupported_media_type", "format"),
        ({"wait": 121}, 422, "invalid_parameter", "between 0 and 120"),
    ],
)
def test_bad_parameters_are_refused_with_the_json_error(server, params, status, code, says):
    response = texture_post(server, **params)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code and says in error["message"], error


def test_bad_paintings_are_refused(server):
    not_an_image = texture_post(server, b"this is not a painting")
    assert not_an_image.status_code == 400 and error_of(not_an_image)["code"] == "invalid_image"
    tiny = texture_post(server, encode(photo(8, 8)))
    assert tiny.status_code == 400 and "16" in error_of(tiny)["message"]
    missing = server.client.post("/v1/textures", files={"other": ("x.png", encode(photo()))})
    assert missing.status_code == 422 and "style_image" in error_of(missing)["message"]
    raw = server.client.post("/v1/textures", content=encode(photo()), headers={"content-type": "image/png"})
    assert raw.status_code == 415 and "multipart/form-data" in error_of(raw)["message"]


def test_the_queue_bound_applies_and_jobs_can_be_cancelled(server):
    client = server.client
    running = texture_post(server, width=MAX_SIDE, height=MAX_SIDE).json()  # relu5_1, 128 px: seconds of work
    wait_status(client, running["id"], "running")
    queued = texture_post(server, width=32, height=32)
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    full = texture_post(server, width=32, height=32)
    assert full.status_code == 429 and error_of(full)["code"] == "queue_full"

    assert client.delete(f"/v1/jobs/{queued.json()['id']}").json()["status"] == "cancelled"
    client.delete(f"/v1/jobs/{running['id']}")
    final = follow(client, running["id"], timeout_s=60)[-1]
    assert final["status"] == "cancelled" and final["progress"] < 1
