#!/usr/bin/env bash
# Set reptyr-tmux up on a fresh Debian/Ubuntu machine (run as root), then run the demo or the tests.
#   bash setup.sh        system packages + a venv in .venv with the package, then `reptyr-tmux demo`
#   bash setup.sh test   the same plus every program the tests run (a C compiler with 32-bit support,
#                        GNU screen, OpenSSH server and client, the shells, less, vim, fzf, ...), then the tests
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-demo}
packages=(tmux python3 python3-venv procps)
if [ "$job" = test ]; then
  # gcc brings binutils (gcc-12 depends on it): the x86_64 as and objcopy that tests/test_holder.py
  # assembles reptyr_tmux/native/*-x86_64.S with; binutils-aarch64-linux-gnu does the *-aarch64.S.
  packages+=(gcc gcc-multilib libc6-dev-i386 screen bash dash zsh fish less vim ncurses-bin util-linux
             passwd login openssh-server openssh-client fzf binutils-aarch64-linux-gnu)
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$job" = test ] && ! dpkg-query -W -f '${Status}' openssh-server 2>/dev/null | grep -q 'ok installed'; then
  # The tests start their own sshd on 127.0.0.1; a new package must not also open port 22 for the system.
  mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run
  echo "setup.sh: openssh-server is installed for the tests only; the system's ssh service stays off" \
       "(rm /etc/ssh/sshd_not_to_be_run to allow it)" >&2
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends --no-upgrade "${packages[@]}" >/dev/null  # only what is missing
# The system Python: tests run the product as an ordinary user, who cannot read a pyenv under /root.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m compileall -q reptyr_tmux   # bytecode now: some setups never write it, and start-up counts
case "$job" in
  demo) exec .venv/bin/reptyr-tmux demo ;;
  test) exec .venv/bin/python -m pytest -q -p no:cacheprovider ;;
  *) echo "setup.sh: unknown job '$job' (use: demo, test)" >&2; exit 2 ;;
esac
