#!/usr/bin/env bash
# `make test-arm64`: wavedge on an emulated Raspberry Pi OS (64-bit) userland.
#
# A Debian bookworm arm64 root (the Python 3.11.2 and glibc 2.36 of Raspberry Pi OS bookworm),
# run under qemu-user through binfmt_misc, with the PyPI aarch64 wheels a Pi installs (numpy,
# onnxruntime, ai-edge-litert, pyserial) and wavedge installed from its source there, as `pip
# install .` on a Pi does (its C fast path compiled by the root's gcc). Inside it:
#   1. `wavedge inspect` and `wavedge run` on both bundled models, both backends, fp32 and int8,
#      each run's predictions compared with the same run on this x86 host (labels equal, every
#      logit within ARM64_TOL_FP32 = 1e-4, or ARM64_TOL_INT8 = 0.1 for int8);
#   2. the torch-free tests of the bridge, the manifest and the runtime (a pyserial stream over a
#      pseudo-terminal, the C stand-in and the C frame driver compiled by the root's own gcc);
# and it says clearly what it cannot do here (no root rights, no binfmt_misc). Emulation is
# 6-400x slower than a board: no timing from here is a performance number, and none is reported.
#
# The root is cached in $ARM64_ROOT (out/arm64/root) and reused while its suite and package list
# are unchanged; `make clean` removes it. Needs root, network to the Debian mirror
# and PyPI, about 1 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=$(realpath -m "${OUT:-out}/arm64")
ROOT=$(realpath -m "${ARM64_ROOT:-$OUT/root}")
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
TOL_FP32=${ARM64_TOL_FP32:-1e-4}  # |arm64 - host| per logit (scripts/arm64/compare.py)
TOL_INT8=${ARM64_TOL_INT8:-0.1}
PACKAGES=python3,python3-venv,python3-pip,python3-dev,ca-certificates,gcc,libc6-dev
SUITE=bookworm
KEY="$SUITE arm64 minbase $PACKAGES"  # what the cached root was built from
T0=$SECONDS

say() { echo "test-arm64: $*" >&2; }
cannot() { echo "test-arm64: cannot run here: $*" >&2; exit 2; }
cleanup() {  # always undo the mounts: removing a root with the host's /dev bound inside would hurt
  for m in "$ROOT/proc/cpuinfo" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -R "$m" 2>/dev/null || umount -l "$m" || true; fi
  done
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || cannot "needs root rights (debootstrap, chroot, mount, binfmt_misc); run it as root on a VM or CI machine"
[ -x "$HOST_PY" ] || cannot "no host venv at $HOST_PY (make venv)"

# -- host tools and binfmt_misc ------------------------------------------------------------------
if ! command -v debootstrap >/dev/null || ! [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]; then
  say "installing qemu-user-static, binfmt-support, debootstrap from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap \
    >/dev/null || cannot "apt-get could not install qemu-user-static binfmt-support debootstrap"
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || cannot "binfmt_misc cannot be mounted (a container without the privilege to?); qemu-aarch64 needs it"
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || cannot "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
QEMU=$(qemu-aarch64-static --version | head -1)
say "host tools ready ($QEMU), $((SECONDS - T0)) s"

# -- the arm64 root ------------------------------------------------------------------------------
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ "$(cat "$ROOT/.wavedge-root" 2>/dev/null)" != "$KEY" ]; then
  cleanup
  rm -rf "$ROOT"
  mkdir -p "$OUT"
  say "debootstrap bookworm arm64 from $MIRROR (about 5 minutes)"
  debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
    >"$OUT/debootstrap.log" 2>&1 || cannot "debootstrap failed (see $OUT/debootstrap.log)"
  echo "$KEY" >"$ROOT/.wavedge-root"
fi
say "root ready, $((SECONDS - T0)) s"

mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
case "$QEMU" in  # QEMU before 10 passes the host's x86 cpuinfo through: onnxruntime segfaults on it
  *"version 10"*|*"version 11"*) ;;
  *) mount --bind "$REPO/scripts/arm64/cpuinfo-a76" "$ROOT/proc/cpuinfo" ;;
esac
C() { chroot "$ROOT" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 QEMU_CPU=cortex-a76 PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
[ "$(C uname -m)" = aarch64 ] || cannot "the root does not run as aarch64"

# -- wheels: downloaded here for aarch64, installed there without an index -------------------------
rm -rf "$ROOT/opt/wheels" "$ROOT/opt/wavedge" "$ROOT/opt/out"
mkdir -p "$ROOT/opt/wheels" "$ROOT/opt/out"
"$HOST_PY" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
  --abi cp311 --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 -d "$ROOT/opt/wheels" \
  numpy onnxruntime pyserial ai-edge-litert pytest pytest-timeout 'setuptools>=77'
# wavedge from the checkout's own files (setuptools would walk out/, the root included), built
# there: its C fast path is an aarch64 build, as on a Pi
rm -rf "$ROOT/opt/src" && mkdir -p "$ROOT/opt/src"
git -C "$REPO" ls-files --cached --others --exclude-standard | tar -C "$REPO" -cf - -T - | \
  tar -C "$ROOT/opt/src" -xf -
[ -x "$ROOT/opt/venv/bin/python" ] || C python3 -m venv /opt/venv
C pip install -q --no-index --find-links /opt/wheels --force-reinstall --no-deps /opt/src
C pip install -q --no-index --find-links /opt/wheels 'wavedge[litert]' pytest pytest-timeout
# the tests and the bundled models as in the repository (the conftest finds them beside tests/)
mkdir -p "$ROOT/opt/wavedge"
git -C "$REPO" ls-files --cached --others --exclude-standard tests wavedge/bundled wavedge/firmware_bridge/c | \
  tar -C "$REPO" -cf - -T - | tar -C "$ROOT/opt/wavedge" -xf -
say "python stack ready: $(C python -c 'import platform, numpy, onnxruntime, ai_edge_litert; from wavedge.runtime import accel; print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, "fast path built:", accel.available())' 2>/dev/null), $((SECONDS - T0)) s"

# -- 1. the bundled models, each backend and precision, against this host --------------------------
runs=()
for model in wave_basic_motions mpl_digit_rows; do
  C wavedge inspect "/opt/wavedge/wavedge/bundled/$model" >"$OUT/inspect-$model.txt"
  for backend in onnxruntime litert; do
    for precision in fp32 int8; do
      name=$model-$backend-$precision
      C wavedge run "/opt/wavedge/wavedge/bundled/$model" --backend "$backend" \
        --source "replay:/opt/wavedge/wavedge/bundled/$model/recording.csv?rate=max" \
        --precision "$precision" --sink "jsonl:/opt/out/$name.jsonl" 2>"$OUT/run-$name.err" \
        || { cat "$OUT/run-$name.err" >&2; say "FAILED: wavedge run $name under emulation"; exit 1; }
      "$HOST_PY" -m wavedge.cli run "$REPO/wavedge/bundled/$model" --backend "$backend" \
        --source "replay:$REPO/wavedge/bundled/$model/recording.csv?rate=max" \
        --precision "$precision" --sink "jsonl:$OUT/host-$name.jsonl" 2>/dev/null
      cp "$ROOT/opt/out/$name.jsonl" "$OUT/arm64-$name.jsonl"
      runs+=("$name")
    done
  done
done
"$HOST_PY" "$REPO/scripts/arm64/compare.py" "$OUT" "$TOL_FP32" "$TOL_INT8" "$QEMU" "${runs[@]}"

# -- 2. the torch-free tests of the bridge, the manifest and the runtime -------------------------
TESTS="tests/test_manifest.py tests/test_bridge_framing.py tests/test_bridge_messages.py"
TESTS="$TESTS tests/test_bridge_link.py tests/test_runtime_stream.py tests/test_bundled.py"
TESTS="$TESTS tests/test_bundled_mpl.py tests/test_service.py tests/test_layering.py"
TESTS="$TESTS tests/test_fast_path.py"
say "pytest under emulation: $(echo $TESTS | wc -w) files"
# the C programs are built with AddressSanitizer; its leak checker cannot run under qemu-user
# (it needs ptrace-free stop-the-world), the address checks still do
C env ASAN_OPTIONS=detect_leaks=0 sh -c "cd /opt/wavedge && python -m pytest -q -p no:cacheprovider $TESTS" \
  | tee "$OUT/pytest.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { say "FAILED: the tests under emulation ($OUT/pytest.txt)"; exit 1; }
say "passed: every run matched the host, and the tests passed ($((SECONDS - T0)) s in all; emulated, so no timing is a performance number)"
