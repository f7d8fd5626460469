#!/usr/bin/env bash
# Runs wgnorm's conformance cases in headless Chromium's WebGPU: the same runner as
# `cargo xtask conformance`, built for wasm32 (web/), fed the case files over a local HTTP
# server. Prints each failing case and a closing "N passed, N failed" line taken from the page;
# exits non-zero on any failure, on a page error or on a timeout. Ends every process it starts.
#
# Usage: scripts/browser-conformance.sh [--limits webgpu|adapter|downlevel] [DIR...]
#   --limits: the device's limits (default webgpu: `wgpu::Limits::default()`, what most pages
#             ask for; adapter: all the browser's adapter offers)
#   DIR: directories of case files (default: tests/conformance/cases tests/conformance/wgnorm)
# Environment: WGNORM_BROWSER_TIMEOUT (seconds for the page, default 1200),
#   WGNORM_WASM_TOOLCHAIN=debian to build with Debian's rustc-web even where rustup has the
#   wasm32 target, CHROMIUM (the browser binary, default chromium).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
limits=webgpu
if [ "${1:-}" = --limits ]; then
    limits="${2:?--limits needs a profile}"
    shift 2
fi
if [ "$#" -eq 0 ]; then
    set -- "$root/tests/conformance/cases" "$root/tests/conformance/wgnorm"
fi
timeout_s="${WGNORM_BROWSER_TIMEOUT:-1200}"
chromium="${CHROMIUM:-chromium}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        # Each was started as its own process group (setsid): end the group, children too.
        kill -TERM -- "-$p" 2>/dev/null || true
    done
    sleep 1
    for p in "${pids[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# ---- the wasm32 build: rustup's target where it can be had, else Debian's rustc-web ----------
# Build outputs live outside the checkout (CI clones afresh): the dependencies build once per
# machine.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/wgnorm-web"
build_wasm() {
    cd "$root/web"
    if [ "${WGNORM_WASM_TOOLCHAIN:-}" != debian ] \
        && command -v rustup >/dev/null \
        && rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
        echo "browser: building web/ for wasm32 (rustup's target)" >&2
        cargo build --release --target wasm32-unknown-unknown --target-dir "$cache/rustup" >&2
        wasm="$cache/rustup/wasm32-unknown-unknown/release/wgnorm_web.wasm"
    else
        # Debian's rustc-web ships no prebuilt wasm32 std: build it from rust-web-src
        # (RUSTC_BOOTSTRAP for -Zbuild-std), linking with lld-22's rust-lld.
        if [ ! -x /usr/bin/rustc ] || ! dpkg -s rust-web-src lld-22 >/dev/null 2>&1; then
            echo "browser: installing rustc-web, cargo-web, rust-web-src, lld-22" >&2
            apt_install rustc-web cargo-web rust-web-src lld-22
        fi
        echo "browser: building web/ for wasm32 (Debian rustc-web, -Zbuild-std)" >&2
        PATH="/usr/bin:/usr/lib/llvm-22/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
            /usr/bin/cargo build --release --target wasm32-unknown-unknown \
            -Zbuild-std=std,panic_abort --target-dir "$cache/debian" >&2
        wasm="$cache/debian/wasm32-unknown-unknown/release/wgnorm_web.wasm"
    fi
    cd "$root"
}

# ---- wasm-bindgen's CLI, the exact version of the crate in web/Cargo.lock -------------------
bindgen() {
    local want have
    want="$(grep -A1 '^name = "wasm-bindgen"$' "$root/web/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')"
    have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" != "$want" ]; then
        echo "browser: installing wasm-bindgen-cli $want (found: ${have:-none})" >&2
        # Not --locked: one of its locked dependency versions is no longer in the registry.
        cargo install wasm-bindgen-cli --version "$want" >&2
    fi
    wasm-bindgen --target web --no-typescript --out-dir "$work/site/pkg" "$wasm"
}

# ---- the site: the page, the glue, the cases and their manifest ----------------------------
site() {
    mkdir -p "$work/site/cases"
    cp "$root/web/page/index.html" "$root/web/page/main.js" "$work/site/"
    local i=0 d f list=()
    for d in "$@"; do
        local sub="cases/$i-$(basename "$d")"
        mkdir -p "$work/site/$sub"
        for f in "$d"/*.safetensors; do
            [ -e "$f" ] || continue
            cp "$f" "$work/site/$sub/"
            list+=("\"$sub/$(basename "$f")\"")
        done
        i=$((i + 1))
    done
    if [ "${#list[@]}" -eq 0 ]; then
        echo "browser: no .safetensors case files in $*" >&2
        exit 1
    fi
    (IFS=,; echo "[${list[*]}]") >"$work/site/cases/manifest.json"
    echo "browser: ${#list[@]} case files" >&2
}

if ! command -v "$chromium" >/dev/null; then
    echo "browser: installing chromium" >&2
    apt_install chromium
fi
build_wasm
bindgen
site "$@"

# ---- serve on 127.0.0.1 (a free port), run the page, read its console ----------------------
setsid python3 -u -m http.server --bind 127.0.0.1 --directory "$work/site" 0 \
    >"$work/http.log" 2>&1 &
pids+=("$!")
port=""
for _ in $(seq 1 100); do
    port="$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/http.log" | head -1)"
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "browser: the HTTP server did not start" >&2; cat "$work/http.log" >&2; exit 1; }

setsid "$chromium" --headless=new --no-sandbox --enable-unsafe-webgpu \
    --user-data-dir="$work/profile" --enable-logging=stderr --v=0 --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --disable-quic \
    "http://127.0.0.1:$port/index.html?limits=$limits" >"$work/chromium.log" 2>&1 &
pids+=("$!")

# Console lines arrive as `...:INFO:CONSOLE(n)] "WGNORM ...", source: ...`.
messages() {
    sed -n 's/.*"WGNORM \(.*\)", source: .*/\1/p' "$work/chromium.log"
}
end=$((SECONDS + timeout_s))
while [ "$SECONDS" -lt "$end" ]; do
    if messages | grep -q '^\(DONE\|ERROR\) '; then
        break
    fi
    sleep 1
done
messages | grep -v '^DONE ' || true
summary="$(messages | sed -n 's/^DONE //p' | tail -1)"
if [ -z "$summary" ]; then
    if messages | grep -q '^ERROR '; then
        echo "browser: the page failed (above)" >&2
    else
        echo "browser: no result within ${timeout_s}s; the browser's log ends:" >&2
        tail -20 "$work/chromium.log" >&2
    fi
    exit 1
fi
echo "$summary"
failed="$(echo "$summary" | sed -n 's/.* \([0-9]*\) failed$/\1/p')"
[ "$failed" = 0 ]
