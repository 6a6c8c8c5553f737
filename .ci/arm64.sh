#!/usr/bin/env bash
# The tests on arm64: an emulated aarch64 Debian 12 machine (qemu-system-aarch64, TCG, no network) boots
# with the committed checkout on a second disk and runs pytest there. Run as root.
#   .ci/arm64.sh                     the engine tests (tests/test_attach.py tests/test_faults.py)
#   .ci/arm64.sh tests               the whole suite (any pytest arguments, paths relative to the repo;
#                                    the whole suite needs ARM64_LIMIT=90m: ~61 min of pytest)
# The image (~30 min to build under emulation) is made once per machine and package list and cached
# under /var/cache/reptyr-tmux-ci/arm64-*; every run boots it with -snapshot, so it stays pristine.
# The guest has no network: the Python packages it needs are built as wheels here and put on its disk.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/.ci/clean-root.sh"
source "$repo/.ci/arm64-image.sh"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_attach.py tests/test_faults.py)
LIMIT=${ARM64_LIMIT:-40m}  # the guest's whole run, boot to power-off

BUILD_DIR='' RUN_DIR=''
started=$SECONDS
took() { printf '%d.%d min' $(( (SECONDS - $1) / 60 )) $(( (SECONDS - $1) % 60 * 10 / 60 )); }
finish() {
  local status=$?
  trap - EXIT INT TERM HUP
  take_down "$BUILD_DIR" || status=1
  take_down "$RUN_DIR" || status=1
  echo ".ci/arm64.sh: exit $status ($(took "$started") in all)"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

phase_start=$SECONDS
arm64_host_packages
arm64_image
echo "arm64 image ready: $(took "$phase_start")"

# The second disk: exactly the committed checkout, the wheels, and which tests to run.
phase_start=$SECONDS
RUN_DIR=$(mktemp -d /var/tmp/reptyr-tmux-arm64.XXXXXX)
disk=$RUN_DIR/disk
git clone -q --no-hardlinks "$repo" "$disk"
git -C "$disk" checkout -q --detach "$(git -C "$repo" rev-parse HEAD)"
echo "testing $(git -C "$disk" log -1 --format='%h %s')"
python3 -m venv "$RUN_DIR/pip"
mapfile -t requirements < <(python3 -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))' "$repo/pyproject.toml")
# For the guest's platform and Python (Debian 12: CPython 3.11 on aarch64), plus what an editable
# install of the checkout builds with.
"$RUN_DIR/pip/bin/pip" download -q -d "$disk/.arm64-wheels" --only-binary=:all: \
  --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
  "${requirements[@]}" 'setuptools>=61' wheel >"$RUN_DIR/pip.log" 2>&1 ||
  { grep -v 'is ignored: it is neither' "$RUN_DIR/pip.log"; echo ".ci/arm64.sh: no wheels for the guest" >&2; exit 1; }
printf '%s\n' "${tests[@]}" >"$disk/.arm64-tests"
truncate -s 2G "$RUN_DIR/work.img"
mkfs.ext4 -q -L arm64-work -d "$disk" "$RUN_DIR/work.img"
echo "checkout and wheels on the guest's disk: $(took "$phase_start")"

# Boot; the guest's init runs .ci/arm64-guest.sh and prints ARM64-CI-EXIT=N before powering off.
phase_start=$SECONDS
status=0
timeout -k 30 "$LIMIT" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m 4096 \
  -nic none -snapshot -nographic -monitor none -no-reboot \
  -kernel "$ARM64_IMAGE/vmlinuz" -initrd "$ARM64_IMAGE/initrd.img" \
  -append "root=/dev/vda rw console=ttyAMA0 init=/sbin/ci-init panic=1 quiet" \
  -drive "file=$ARM64_IMAGE/root.img,if=virtio,format=raw" \
  -drive "file=$RUN_DIR/work.img,if=virtio,format=raw" </dev/null > >(tee "$RUN_DIR/console.log") 2>&1 &
wait $! || status=$?
wait
[ "$status" != 124 ] || echo "the arm64 guest did not finish within $LIMIT"
echo "arm64 guest (boot, install, tests): $(took "$phase_start")"
guest=$(grep -a -o 'ARM64-CI-EXIT=[0-9]*' "$RUN_DIR/console.log" | tail -n 1 | cut -d= -f2)
summary=$(grep -a -E ' in [0-9.]+s' "$RUN_DIR/console.log" | grep -a -E 'passed|failed|error|no tests ran' |
  tail -n 1 | tr -d '\r' || true)
echo "arm64 tests: ${summary:-no pytest summary line (see above)}"
[ -n "$guest" ] || { echo "the arm64 guest never reported an exit status"; exit 1; }
echo "arm64 pytest exit $guest"
exit "$guest"
