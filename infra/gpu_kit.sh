#!/usr/bin/env bash
# Build the GPU check kit: everything a GPU machine with no package registry needs, besides the torch,
# torchvision, transformers and timm its Python 3.12 already has, to run infra/gpu_check.py.
#
#   make gpu-kit                      # -> dist/gpu-kit/ (at most 60 MiB), then copy it over and there:
#   cd gpu-kit && ./install.sh && python3 infra/gpu_check.py
#
# Wheels for CPython 3.12 on x86-64 Linux: this project (installed without its dependency pins: the GPU
# image's own torch stack is used), DeepSpeed (built here from its sdist, pure Python: its ops are
# compiled on first use there), webdataset, pyarrow (CapFilt's score tables; glibc 2.28 or later), ijson and the
# few dependencies of those the image lacks. MLflow, DVC, Prefect, Ray and great-expectations are not needed by
# the check (it runs with tracking off, and CapFilt's scoring function without Ray). The BERT vocabulary file comes along, as the tokenizer never
# downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/gpu-kit}"
# pip and uv from the base interpreter: inside `uv run` python3 is the project's venv, which has neither
base="$(python3 -c 'import os, sys; print(os.path.join(sys.base_prefix, "bin", "python3"))')"
uv="${UV:-$base -m uv}"
pip="$base -m pip"
rm -rf "$out"
mkdir -p "$out/wheels" "$out/infra"
$uv build --wheel -q -o "$out/wheels" .
sdists="$(mktemp -d)"
trap 'rm -rf "$sdists"' EXIT
version() { $uv run --frozen --no-sync python -c "import importlib.metadata as m; print(m.version('$1'))"; }
$pip download -q --no-deps --no-binary :all: "deepspeed==$(version deepspeed)" -d "$sdists"
$uv build --wheel -q -o "$out/wheels" "$sdists"/deepspeed-*.tar.gz   # torch at build time (pyproject's [tool.uv])
pins=()
for pkg in webdataset braceexpand hjson pydantic pydantic-core annotated-types typing-inspection pyarrow ijson; do
  pins+=("$pkg==$(version "$pkg")")
done
$pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp --abi cp312 \
  --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  -d "$out/wheels" "${pins[@]}"
printf '%s\n' "${pins[@]}" "deepspeed==$(version deepspeed)" > "$out/requirements.txt"
$uv run --frozen --no-sync python -c "from blip.tokenizer import resolve_vocab; print(resolve_vocab(None))" | xargs -I{} cp {} "$out/vocab.txt"
cp params.yaml "$out/"
cp infra/gpu_check.py "$out/infra/"
cat > "$out/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Offline install into the Python that already holds torch, transformers and timm (python3 by default).
set -euo pipefail
cd "$(dirname "$0")"
py="${PYTHON:-python3}"
"$py" -m pip install --no-index --find-links wheels -r requirements.txt
# the project's own wheel pins the lock's versions (torch 2.14, Python 3.11): here the image's are used
"$py" -m pip install --no-index --no-deps --ignore-requires-python wheels/blip_capfilt-*.whl
"$py" -c "import blip.capfilt.scoring, blip.params, deepspeed, webdataset; print('gpu kit installed')"
echo "next: $py infra/gpu_check.py --vocab vocab.txt   (or --cpu-sized on a machine without a GPU)"
INSTALL
chmod +x "$out/install.sh"
size="$(du -sm "$out" | cut -f1)"
echo "gpu kit: $out, ${size} MiB"
if [ "$size" -gt 60 ]; then echo "the kit is over 60 MiB" >&2; exit 1; fi
