"""The OpenAPI schema states what the server enforces, and the server enforces what the schema states.

The schema is read from an app built in-process (no model needed to describe the
API) and from a real server; the rules it states are checked against the
server's own constants (the bank's name pattern, the job ids, the encoder's
formats, the settings' bounds) and against the server's answers.
"""

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from app.jobs import JOB_ID
from app.main import create_app
from app.settings import Settings
from model.bank import DEFAULT_BANK_DIR, STYLE_NAME
from model.imageio import FORMAT_ALIASES, OUTPUT_FORMATS
from model.style_spec import parse_style_spec
from tests.app.service_helpers import Server, decode, encode, error_of, photo

MAX_SIDE = 200
MAX_WAIT_S = 30.0
BUNDLED_STYLES = [style["name"] for style in json.loads((DEFAULT_BANK_DIR / "manifest.json").read_text())["styles"]]


@pytest.fixture(scope="module")
def schema() -> dict:
    return create_app(Settings(max_output_side=MAX_SIDE, max_wait_s=MAX_WAIT_S)).openapi()


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank) -> Server:
    return server_factory(
        tiny_bank,
        "truth",
        max_output_side=MAX_SIDE,
        max_wait_s=MAX_WAIT_S,
        slow_steps=400,
        slow_time_limit_s=20,
        slow_max_side=64,
    )


def operation(schema: dict, method: str, path: str) -> dict:
    return schema["paths"][path][method]


def parameter(schema: dict, method: str, path: str, name: str) -> dict:
    return next(p for p in operation(schema, method, path)["parameters"] if p["name"] == name)


def body_schema(schema: dict, method: str, path: str) -> dict:
    ref = operation(schema, method, path)["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


# -- the schema states the server's own rules -------------------------------------------------------------------------


def test_style_names_have_the_banks_pattern(schema):
    for method, path in (("get", "/v1/styles/{name}/preview"), ("delete", "/v1/styles/{name}")):
        assert parameter(schema, method, path, "name")["schema"]["pattern"] == STYLE_NAME.pattern
    assert body_schema(schema, "post", "/v1/styles")["properties"]["name"]["pattern"] == STYLE_NAME.pattern
    spec = parameter(schema, "post", "/v1/stylize", "style")["schema"]["pattern"]
    for good in ("alpha", "van_gogh_starry_night:0.7,munch_the_scream:0.3", "a-b_c:1,d:.5,e:2.,f:1e-3"):
        assert re.search(spec, good), good
    for bad in ("", "Alpha", " alpha", "alpha:-1", "alpha:nan", "alpha:", "alpha,", "a/b", "x" * 65, "_a"):
        assert not re.search(spec, bad), bad


def test_job_ids_have_the_job_managers_pattern(schema):
    for method, path in (
        ("get", "/v1/jobs/{job_id}"),
        ("get", "/v1/jobs/{job_id}/result"),
        ("delete", "/v1/jobs/{job_id}"),
    ):
        assert parameter(schema, method, path, "job_id")["schema"]["pattern"] == JOB_ID.pattern


def test_ranges_and_enums(schema):
    def rule(name: str) -> dict:
        return parameter(schema, "post", "/v1/stylize", name)["schema"]

    assert (rule("strength")["minimum"], rule("strength")["maximum"]) == (0, 1)
    assert (rule("max_side")["minimum"], rule("max_side")["maximum"]) == (16, MAX_SIDE)  # the app's settings
    assert (rule("wait")["minimum"], rule("wait")["maximum"]) == (0, MAX_WAIT_S)
    assert set(rule("format")["enum"]) == set(OUTPUT_FORMATS) | set(FORMAT_ALIASES)
    assert set(rule("init")["enum"]) == {"content", "nearest"}
    assert rule("preserve_color")["type"] == "boolean"
    for name in ("style", "max_side", "format"):  # optional: absent is fine, an explicit null is not offered
        assert "anyOf" not in rule(name) and rule(name)["type"] != "null"


def test_file_fields_are_binary_never_null(schema):
    for path, required, optional in (("/v1/stylize", {"image"}, {"style_image"}), ("/v1/styles", {"style_image"}, ())):
        body = body_schema(schema, "post", path)
        assert set(body["required"]) >= required
        for name in (*required, *optional):
            field = body["properties"][name]
            assert (field["type"], field["format"]) == ("string", "binary"), field
            assert "anyOf" not in field
        assert not set(optional) & set(body.get("required", ()))


def test_every_operation_documents_its_error_statuses(schema):
    expected = {
        ("post", "/v1/stylize"): {"200", "202", "400", "406", "413", "415", "422", "429", "503"},
        ("post", "/v1/styles"): {"202", "400", "401", "409", "413", "415", "422", "429", "503"},
        ("delete", "/v1/styles/{name}"): {"204", "401", "404", "409", "422", "503"},
        ("get", "/v1/styles/{name}/preview"): {"200", "404", "422", "503"},
        ("get", "/v1/jobs/{job_id}"): {"200", "404"},
        ("get", "/v1/jobs/{job_id}/result"): {"200", "404", "409"},
        ("delete", "/v1/jobs/{job_id}"): {"200", "404"},
    }
    for (method, path), statuses in expected.items():
        responses = operation(schema, method, path)["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    accepted = operation(schema, "post", "/v1/stylize")["responses"]["202"]
    assert accepted["headers"]["Location"]["required"] is True
    assert "message" in schema["components"]["schemas"]["JobOut"]["properties"]


# -- examples work on a default install -------------------------------------------------------------------------------


def test_every_style_name_in_the_examples_is_in_the_bundled_bank(schema):
    bank = BUNDLED_STYLES
    assert len(bank) == 22
    specs = [example["value"] for example in parameter(schema, "post", "/v1/stylize", "style")["examples"].values()]
    for text in strings(schema):  # curl lines and blends quoted in descriptions
        specs += re.findall(r"[?&]style=([a-z0-9_.:,-]+)", text)
        specs += re.findall(r"`([a-z0-9_-]+:[0-9.]+(?:,[a-z0-9_-]+:[0-9.]+)+)`", text)
        specs += re.findall(r"/v1/styles/([a-z0-9_-]+)/preview", text)
    specs += [e["value"] for e in parameter(schema, "get", "/v1/styles/{name}/preview", "name")["examples"].values()]
    specs += schema["components"]["schemas"]["StyleOut"]["properties"]["name"]["examples"]
    assert len(specs) >= 6, specs
    for spec in specs:
        parse_style_spec(spec, bank)  # raises for a name the bank lacks
    assert not {"starry_night", "the_scream"} & set(bank)
    assert "starry_night:" not in json.dumps(schema).replace("van_gogh_starry_night", "")
    # Names that are examples of a *new* (learned) style must not be taken already.
    assert body_schema(schema, "post", "/v1/styles")["properties"]["name"]["examples"][0] not in bank
    learned = parameter(schema, "delete", "/v1/styles/{name}", "name")["examples"]
    assert all(example["value"] not in bank for example in learned.values())


# -- the server enforces exactly that ---------------------------------------------------------------------------------


def test_405_names_every_method_of_the_path(server):
    client = server.client
    for method, path, allowed in (
        ("OPTIONS", "/v1/styles", "GET, POST"),
        ("PUT", "/v1/stylize", "POST"),
        ("PATCH", "/v1/styles/alpha", "DELETE"),
        ("PUT", "/v1/jobs/" + "a" * 32, "DELETE, GET"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed
        error = error_of(response)
        assert error["code"] == "method_not_allowed" and allowed in error["message"]


def post(client: httpx.Client, files: dict, **params) -> httpx.Response:
    return client.post("/v1/stylize", params=params, files=files)


IMAGE = {"image": ("p.png", encode(photo(40, 30)))}


@pytest.mark.parametrize(
    ("params", "status", "code", "says"),
    [
        ({"style": "alpha", "format": "bmp"}, 415, "unsupported_media_type", "format"),
        ({"style": "alpha", "format": "PNG"}, 415, "unsupported_media_type", "format"),
        ({"style": "alpha:-1"}, 422, "invalid_style_weights", "style"),
        ({"style": "Alpha"}, 422, "invalid_style_weights", "lowercase"),
        ({"style": "alpha", "strength": 2}, 422, "invalid_parameter", "between 0 and 1"),
        ({"style": "alpha", "max_side": MAX_SIDE + 1}, 422, "invalid_parameter", f"between 16 and {MAX_SIDE}"),
        ({"style": "alpha", "max_side": 15}, 422, "invalid_parameter", f"between 16 and {MAX_SIDE}"),
        ({"style": "alpha", "wait": MAX_WAIT_S + 1}, 422, "invalid_parameter", f"between 0 and {MAX_WAIT_S:g}"),
        ({"style": "alpha", "init": "photo"}, 422, "invalid_parameter", "init"),
        ({"style": "monet"}, 422, "unknown_style", "alpha"),
    ],
)
def test_invalid_parameters_are_refused_as_documented(server, params, status, code, says):
    response = post(server.client, IMAGE, **params)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code and says in error["message"], error


def test_values_at_the_stated_bounds_are_accepted(server):
    client = server.client
    big = {"image": ("p.png", encode(photo(MAX_SIDE + 40, 100)))}
    at_max = post(client, big, style="alpha:0,beta:1", max_side=MAX_SIDE, strength=0, format="jpg")
    assert at_max.status_code == 200, at_max.text
    assert decode(at_max.content).size[0] == MAX_SIDE and at_max.headers["content-type"] == "image/jpeg"
    square = {"image": ("p.png", encode(photo(40, 40)))}
    assert post(client, square, style="alpha", max_side=16, strength=1).status_code == 200


def test_a_text_part_is_read_as_the_file(server):
    """``curl -F 'image=<photo.png'`` sends the file as a part without a filename: still the photo."""
    png = encode(photo(40, 30))
    response = post(server.client, {"image": (None, png)}, style="alpha")
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (40, 30)
    text = post(server.client, {"image": (None, b"not an image")}, style="alpha")
    assert text.status_code == 400 and error_of(text)["code"] == "invalid_image"


def test_bad_paths_and_bodies(server):
    client = server.client
    for path in ("/v1/jobs/not-a-job", "/v1/jobs/" + "A" * 32 + "/result"):
        response = client.get(path)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found", path
    bad_name = client.get("/v1/styles/Bad.Name/preview")
    assert bad_name.status_code == 422 and "lowercase" in error_of(bad_name)["message"]
    raw = client.post(
        "/v1/stylize", params={"style": "alpha"}, content=encode(photo()), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 415 and "multipart/form-data" in error_of(raw)["message"]
    both = post(client, {**IMAGE, "style_image": ("s.png", encode(photo(seed=3)))}, style="alpha")
    assert both.status_code == 422 and "exactly one" in error_of(both)["message"]


def test_an_expired_wait_says_how_to_fetch_the_result(server):
    client = server.client
    files = {"image": ("p.png", encode(photo(48, 40))), "style_image": ("s.png", encode(photo(32, 32, seed=5)))}
    accepted = post(client, files, wait=0.3)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    url = f"/v1/jobs/{job['id']}"
    assert accepted.headers["location"] == url
    assert f"GET {url}" in job["message"] and f"GET {url}/result" in job["message"] and "wait=0.3" in job["message"]
    deadline = time.monotonic() + 120
    while client.get(url).json()["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = client.get(f"{url}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png", result.text
    assert decode(result.content).size == (48, 40)


def test_the_textures_route_states_its_bounds_and_layers(schema):
    from model.slow import TEXTURE_LAYERS

    def rule(name: str) -> dict:
        return parameter(schema, "post", "/v1/textures", name)["schema"]

    slow_max_side = Settings().slow_max_side
    for name in ("width", "height"):
        assert (rule(name)["minimum"], rule(name)["maximum"]) == (16, slow_max_side)
    assert rule("layers")["enum"] == list(TEXTURE_LAYERS) and rule("layers")["default"] == "relu5_1"
    assert rule("tileable")["type"] == "boolean" and rule("seed")["minimum"] == 0
    assert (rule("wait")["minimum"], rule("wait")["maximum"]) == (0, MAX_WAIT_S)
    responses = operation(schema, "post", "/v1/textures")["responses"]
    assert {"200", "202", "400", "413", "415", "422", "429", "503"} <= set(responses)
    assert responses["202"]["headers"]["Location"]["required"] is True
    body = body_schema(schema, "post", "/v1/textures")
    assert body["required"] == ["style_image"] and body["properties"]["style_image"]["format"] == "binary"
    assert "texture" in schema["components"]["schemas"]["JobOut"]["properties"]["kind"]["enum"]
