# Sourced by .ci/run: make a clean Debian 12 root, enter it, and take it down again safely.
#
# The root is what a fresh server has (debootstrap minbase plus ROOT_PACKAGES), nothing more: whatever
# else setup.sh needs, setup.sh must install. Built once a day per package list and kept as a tarball;
# every run unpacks a pristine copy.

SUITE=bookworm
ROOT_PACKAGES=(python3 python3-venv git ca-certificates)
CACHE_DIR=/var/cache/reptyr-tmux-ci
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CHROOT=$(command -v chroot)

# The archive the host's own apt uses for SUITE (apt parses both sources.list formats for us): only
# that registry is reachable from CI.
host_archive() {
  # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
    awk -v suite="$1" '$2 == suite { print $1; exit }'
}

# Sets TARBALL to today's root tarball for this package list and archive, building it first if missing.
# (Globals, not output: a $(...) subshell would hide BUILD_DIR from the caller's trap.)
root_tarball() {
  local mirror security key lock
  mirror=$(host_archive "$SUITE")
  security=$(host_archive "$SUITE-security")
  if [ -z "$mirror" ]; then
    echo ".ci/run: the host's apt has no source for Debian $SUITE; cannot build a clean root" >&2
    return 1
  fi
  key=$(printf '%s\n' "$SUITE" minbase "${ROOT_PACKAGES[*]}" "$mirror" "$security" | sha256sum | cut -c1-12)
  TARBALL="$CACHE_DIR/$SUITE-minbase-$(date -u +%Y%m%d)-$key.tar.gz"
  mkdir -p "$CACHE_DIR"
  exec {lock}>"$CACHE_DIR/lock"
  flock "$lock"  # two runs at once build it once
  if [ ! -s "$TARBALL" ]; then
    build_tarball "$TARBALL" "$mirror" "$security" || { exec {lock}>&-; return 1; }
    find "$CACHE_DIR" -maxdepth 1 -name "$SUITE-minbase-*.tar.gz" ! -path "$TARBALL" -delete
  else
    echo "using the cached clean root $TARBALL"
  fi
  exec {lock}>&-
}

build_tarball() {
  local tarball=$1 mirror=$2 security=$3 root include
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  BUILD_DIR=$(mktemp -d /var/tmp/reptyr-tmux-ci-build.XXXXXX)  # taken down by the caller's trap
  root=$BUILD_DIR/root
  include=$(IFS=,; echo "${ROOT_PACKAGES[*]}")
  echo "debootstrap --variant=minbase --include=$include $SUITE from $mirror"
  debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" \
    >"$BUILD_DIR/debootstrap.log" 2>&1 || { tail -n 30 "$BUILD_DIR/debootstrap.log"; return 1; }
  # What the Debian installer writes: the release, its updates and, when the host has it, security.
  {
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    [ -z "$security" ] || echo "deb $security $SUITE-security main"
  } >"$root/etc/apt/sources.list"
  "$CHROOT" "$root" apt-get clean
  tar -C "$root" --numeric-owner -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
  echo "built $tarball ($(du -h "$tarball" | cut -f1))"
  take_down "$BUILD_DIR" && BUILD_DIR=
}

# A pristine copy of the root in a new directory RUN_DIR (the root is RUN_DIR/root).
unpack_root() {
  RUN_DIR=$(mktemp -d /var/tmp/reptyr-tmux-ci.XXXXXX)
  mkdir "$RUN_DIR/root"
  tar -C "$RUN_DIR/root" --numeric-owner -xpzf "$1"
}

# /proc, /sys, /dev, /dev/pts from the host; fresh tmpfs on /dev/shm, /run, /tmp, as a booted machine
# has (/tmp without nosuid: Debian 12 keeps it on the root filesystem, where setuid programs work).
# Every mount is made private at once: a bind of a shared host mount would otherwise pass the mounts
# made on top of it (our /dev/shm) back to the host.
mount_root() {
  local root=$1 dir
  mount --bind "$root" "$root" && mount --make-private "$root"
  for dir in /proc /sys /dev /dev/pts; do
    mount --bind "$dir" "$root$dir" && mount --make-private "$root$dir"
  done
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
}

# What the network asks of any machine on it, not the project: its DNS servers and the site's CA
# certificates (a TLS-inspecting proxy's, here; without it pip cannot reach PyPI).
join_network() {
  local root=$1
  cp -L --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    in_root "$root" "update-ca-certificates >/dev/null 2>&1"
  fi
}

# Run a command line in the root as root would after logging in: its environment only, no terminal.
in_root() {
  local root=$1
  shift
  local proxies=() name
  for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!name:-}" ] || proxies+=("$name=${!name}")
  done
  # REPTYR_TMUX_IN_CHROOT: tests whose facts differ under chroot say so (init's root may be unreadable).
  env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash PATH="$ROOT_PATH" CI="${CI:-true}" \
    REPTYR_TMUX_IN_CHROOT=1 \
    "${proxies[@]}" "$CHROOT" "$root" /bin/bash -c "$*" </dev/null
}

# Whether process PID's root directory is DIR or inside it (false once it is gone or a zombie, which
# holds no mount).
rooted_in() {
  local r
  r=$(readlink "/proc/$2/root" 2>/dev/null) && [[ $r == "$1" || $r == "$1"/* ]]
}

pids_in() {
  local p
  for p in /proc/[0-9]*; do
    rooted_in "$1" "${p#/proc/}" && echo "${p#/proc/}"
  done
  return 0
}

# End every process living in DIR by pid: SIGTERM, up to 5 s, then SIGKILL, until none is left.
end_processes() {
  local dir=$1 signal=TERM pid pids=() ended=() killed=()
  for _ in {1..10}; do
    mapfile -t pids < <(pids_in "$dir")
    [ ${#pids[@]} -gt 0 ] || break
    if [ "$signal" = TERM ]; then ended=("${pids[@]}"); else killed+=("${pids[@]}"); fi
    for pid in "${pids[@]}"; do
      # Looked up again right before the signal, so a pid that ended and was reused is spared.
      if rooted_in "$dir" "$pid"; then kill "-$signal" "$pid" 2>/dev/null || true; fi
    done
    for _ in {1..50}; do
      [ -n "$(pids_in "$dir")" ] || break
      sleep 0.1
    done
    signal=KILL
  done
  local needed=${killed[*]:+; SIGKILL needed: ${killed[*]}}
  [ ${#ended[@]} = 0 ] || echo "ended ${#ended[@]} processes left in $dir (pids ${ended[*]}$needed)"
  [ -z "$(pids_in "$dir")" ] || { echo "processes still in $dir: $(pids_in "$dir" | xargs)"; return 1; }
}

# Mount points at DIR or below it, in the order they were mounted.
mounts_under() {
  awk -v dir="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == dir || index(m, dir "/") == 1) print m }' \
    /proc/self/mountinfo
}

# Unmount everything at or below DIR, last mounted first; lazily (and said so) only if it stays busy.
unmount_all() {
  local dir=$1 m
  for _ in 1 2 3; do
    [ -n "$(mounts_under "$dir")" ] || return 0
    mounts_under "$dir" | tac | while read -r m; do umount "$m" 2>/dev/null; done
    [ -n "$(mounts_under "$dir")" ] || return 0
    sleep 1
    end_processes "$dir"
  done
  mounts_under "$dir" | tac | while read -r m; do
    umount "$m" 2>/dev/null ||
      { umount -l "$m" && echo "WARNING: $m stayed busy; unmounted lazily (umount -l)"; }
  done
}

# End its processes, unmount, delete: but never delete a directory with anything still mounted in it.
take_down() {
  local dir=$1
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  end_processes "$dir"
  unmount_all "$dir"
  if [ -n "$(mounts_under "$dir")" ]; then
    echo "NOT deleting $dir: still mounted there: $(mounts_under "$dir" | xargs)"
    return 1
  fi
  rm -rf --one-file-system "$dir"
}
