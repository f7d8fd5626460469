#!/usr/bin/env bash
# One run on a machine with a real GPU: validate every shader specialisation, check every
# conformance case on that device, run the full bench (JSON + SVG) and the autotune (a tuning
# table for this adapter, then the row bench again with it loaded), writing everything under
# OUT_DIR. Usage: scripts/gpu-bench.sh OUT_DIR
#
# Builds with cargo when the machine has it; otherwise runs a prebuilt target/release/xtask
# (build it on any x86-64 Linux machine with `cargo build --release -p xtask` and carry it over).
# If no Vulkan loader is installed but .gl/*.deb packages travelled with the tree (libvulkan1 and
# friends, see the project's device notes), they are unpacked first; NVIDIA's ICD is used when
# no other driver is found.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:?usage: scripts/gpu-bench.sh OUT_DIR}"
mkdir -p "$OUT_DIR"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

if ! ldconfig -p | grep -q libvulkan.so.1 && compgen -G '.gl/*.deb' >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null &&
    ! compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null &&
    [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

if command -v cargo >/dev/null; then
    cargo build --release -p xtask 2>&1 | tail -3
fi
XTASK=target/release/xtask
[ -x "$XTASK" ] || { echo "no $XTASK: build it first (cargo build --release -p xtask)"; exit 1; }

status=0
run() {
    local name="$1"
    shift
    echo "== $name: $*"
    "$@" >"$OUT_DIR/$name.log" 2>&1 || { echo "$name failed"; status=1; }
    tail -5 "$OUT_DIR/$name.log"
}
run validate "$XTASK" validate
run conformance "$XTASK" conformance tests/conformance/cases
run bench "$XTASK" bench --json "$OUT_DIR/bench.json" --plot "$OUT_DIR/bench.svg"
# Start-up: each op's first call (pipeline compilation) on a fresh context, its second call, and
# its first call with the pipeline cache of the first context loaded.
run first-call "$XTASK" bench --first-call --json "$OUT_DIR/first-call.json"
# The kernel choices measured on this adapter: the JSON is a tuning table the runtime loads
# (wgnorm::Tuning::from_json, WGNORM_TUNING=FILE); the log prints best beside default per shape.
run autotune "$XTASK" bench --autotune --json "$OUT_DIR/tuning.json"
# The bench again with that table loaded: what an app shipping it gets.
WGNORM_TUNING="$OUT_DIR/tuning.json" run bench-tuned "$XTASK" bench --ops layer_norm,rms_norm --json "$OUT_DIR/bench-tuned.json"
# f16 row norms with the other four-element f16 access (the default on a GPU with SHADER_F16
# is `vector`, device conversions; `packed` is the arithmetic path llvmpipe prefers).
WGNORM_F16_ACCESS=packed run bench-f16-packed "$XTASK" bench --ops layer_norm,rms_norm --json "$OUT_DIR/bench-f16-packed.json"
exit $status
