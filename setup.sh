#!/usr/bin/env bash
# Set reptyr-tmux up on a fresh Debian/Ubuntu machine (run as root), then run the demo or the tests.
#   bash setup.sh        system packages + a venv in .venv with the package, then `reptyr-tmux demo`
#   bash setup.sh test   the same plus test tools (gcc-multilib, GNU screen), then the test suite
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-demo}
packages=(tmux python3 python3-venv procps)
if [ "$job" = test ]; then
  packages+=(gcc gcc-multilib libc6-dev-i386 screen bash util-linux)
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m compileall -q reptyr_tmux   # bytecode now: some setups never write it, and start-up counts
case "$job" in
  demo) exec .venv/bin/reptyr-tmux demo ;;
  test) exec .venv/bin/python -m pytest -q -p no:cacheprovider ;;
  *) echo "setup.sh: unknown job '$job' (use: demo, test)" >&2; exit 2 ;;
esac
