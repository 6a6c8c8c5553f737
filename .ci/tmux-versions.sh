# shellcheck shell=bash disable=SC2034  # sourced by .ci/run, which reads $status
# The tmux-facing tests against the other tmux releases users have (the main run uses Debian 12's 3.3a).
#
# Sourced by .ci/run after the README's commands: `other_tmux_versions ROOT` builds (or takes from the
# cache) each release below, copies it into the clean root and runs the tests marked `tmux` there with
# it first on PATH. Each build is made inside a clean root (the libraries the tests run with), from the
# upstream tarball Debian's archive serves for that release (`apt-get source`: its signed Sources index
# vouches for the bytes), and kept in CACHE_DIR under a key of the release, the build recipe and the
# root's suite: a changed recipe builds anew, an unchanged one is reused across runs on this machine.
#
# `bash .ci/tmux-versions.sh build VERSION SOURCE PREFIX`: the build itself (run inside the root).
#
# Others cannot be had here: the archive's pool no longer serves 3.2a, 3.0a, 2.x, 3.4, 3.6b or 3.7c (its
# indexes still name 3.6b and 3.7c; fetching them gives 404), and its 3.6a is a git snapshot, not the
# release. The README says so.

# release  apt-get source argument
TMUX_RELEASES=(
  "3.1c tmux/bullseye"
  "3.5a tmux/trixie"
)
TMUX_SOURCE_SUITES=(bullseye trixie)
TMUX_BUILD_PACKAGES=(build-essential libevent-dev libncurses-dev bison pkgconf)
TMUX_RUNTIME_PACKAGES=(libevent-2.1-7)  # what a cached build needs in a fresh root (ncurses is in minbase)
TMUX_TESTS_LIMIT=15m  # per release; the marked tests take ~1 min

TMUX_VERSION_SUMMARIES=()

other_tmux_versions() {
  local root=$1 entry release source prefix run_status=0 lock
  local recipe
  recipe=$( { declare -f build_tmux; echo "${TMUX_BUILD_PACKAGES[*]}"; } | sha256sum | cut -c1-12)
  mkdir -p "$CACHE_DIR"
  in_root "$root" "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends" \
    "${TMUX_RUNTIME_PACKAGES[*]} >/dev/null" || { status=1; return 0; }
  for entry in "${TMUX_RELEASES[@]}"; do
    read -r release source <<<"$entry"
    prefix=$CACHE_DIR/tmux-$release-$SUITE-$recipe
    exec {lock}>"$CACHE_DIR/lock-tmux-$release"
    flock "$lock"  # two runs at once build it once
    if [ -x "$prefix/bin/tmux" ]; then
      echo "=== tmux $release: using the cached build $prefix"
    else
      echo "=== tmux $release: building from $source"
      build_tmux_in_root "$root" "$release" "$source" "$prefix" || { run_status=1; exec {lock}>&-; continue; }
      find "$CACHE_DIR" -maxdepth 1 -name "tmux-$release-*" ! -path "$prefix" -exec rm -rf {} +
    fi
    rm -rf "$root/opt/tmux-$release" && mkdir -p "$root/opt" && cp -a "$prefix" "$root/opt/tmux-$release"
    exec {lock}>&-
    tests_with_tmux "$root" "$release" || run_status=1
  done
  printf '%s\n' "${TMUX_VERSION_SUMMARIES[@]}"
  status=$run_status
}

build_tmux_in_root() {
  local root=$1 release=$2 source=$3 prefix=$4
  in_root "$root" "bash /root/reptyr-tmux/.ci/tmux-versions.sh build $release '$source' /opt/tmux-$release" \
    >"$RUN_DIR/build-tmux-$release.log" 2>&1 &
  if ! wait $!; then
    tail -n 30 "$RUN_DIR/build-tmux-$release.log"
    echo "tmux $release: the build failed (log above)"
    return 1
  fi
  rm -rf "$prefix.part" && cp -a "$root/opt/tmux-$release" "$prefix.part" && mv "$prefix.part" "$prefix"
  echo "tmux $release: built and cached ($(grep -o 'took [0-9]* s' "$RUN_DIR/build-tmux-$release.log" || true))"
}

tests_with_tmux() {
  local root=$1 release=$2 result=0
  local log=$RUN_DIR/tests-tmux-$release.log
  in_root "$root" "cd /root/reptyr-tmux && PATH=/opt/tmux-$release/bin:\$PATH && tmux -V &&" \
    "timeout -k 30 $TMUX_TESTS_LIMIT .venv/bin/python -m pytest -q -p no:cacheprovider -m tmux" \
    > >(tee "$log") 2>&1 &
  wait $! || result=$?
  wait
  local line
  line=$(grep -E ' in [0-9.]+s' "$log" | grep -E 'passed|failed|error' | tail -n 1)
  TMUX_VERSION_SUMMARIES+=("tmux $release: ${line:-no pytest summary (exit $result)}")
  return "$result"
}

# Inside the root: fetch RELEASE's upstream tarball from Debian's archive and install it in PREFIX.
build_tmux() {
  local release=$1 source=$2 prefix=$3 mirror suite work started=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
  for suite in "${TMUX_SOURCE_SUITES[@]}"; do
    echo "deb-src $mirror $suite main"
  done >/etc/apt/sources.list.d/reptyr-tmux-sources.list
  # Testing's Release files carry a Valid-Until that a mirror frozen in time is past; they are still
  # signed, and the tarball's hash is still checked against them.
  apt-get update -qq -o Acquire::Check-Valid-Until=false
  apt-get install -y -qq --no-install-recommends "${TMUX_BUILD_PACKAGES[@]}" >/dev/null
  work=$(mktemp -d /tmp/tmux-build.XXXXXX)
  (cd "$work" && apt-get source -qq --download-only "$source")
  local tarball=("$work"/tmux_"$release".orig.tar.*)
  if [ ! -f "${tarball[0]}" ]; then
    echo "tmux $release: '$source' in Debian's archive is not release $release (got: $(ls "$work"))" >&2
    return 1
  fi
  tar -C "$work" -xf "${tarball[0]}"
  (cd "$work/tmux-$release" && ./configure -q --prefix="$prefix" && make -s -j"$(nproc)" && make -s install)
  "$prefix/bin/tmux" -V
  rm -rf "$work"
  echo "took $((SECONDS - started)) s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced
  set -euo pipefail
  if [ "${1:-}" != build ] || [ $# != 4 ]; then
    echo "usage: $0 build VERSION SOURCE PREFIX" >&2
    exit 2
  fi
  build_tmux "$2" "$3" "$4"
fi
