# Sourced by .ci/arm64.sh (after clean-root.sh): an arm64 Debian 12 disk image, its kernel and a small
# initrd, built once per machine and package list under $CACHE_DIR/arm64-KEY/ and reused after.
#
# The build is debootstrap --foreign (host side, arm64 .debs unpacked) plus the second stage run under
# qemu-user-static (binfmt_misc). Under emulation an initramfs build with all modules takes ~15 min and
# the kernel package and every trigger would make one, so INITRD=No (the kernel's postinst hook) and
# update_initramfs=no (the triggers) hold them all back, and one initrd is made at the end with only the
# modules a qemu "virt" machine needs to mount its root.

ARM64_PACKAGES=(python3 python3-venv gcc libc6-dev binutils tmux procps less git screen bash dash zsh fish vim fzf
                ncurses-bin util-linux passwd login openssh-server openssh-client iproute2 ca-certificates
                linux-image-arm64 initramfs-tools kmod e2fsprogs)
ARM64_INITRD_MODULES=(virtio_pci virtio_blk virtio_net ext4 crc32c_generic)

# PID 1 of the test machine: what a booted system has mounted, loopback up, then the job on the second
# disk (the checkout), whose exit status is printed as a marker line for the host; then power off.
ARM64_INIT='#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw /
hostname arm64-ci
ip link set lo up
mkdir -p /root/reptyr-tmux
mount /dev/vdb /root/reptyr-tmux
status=99
if [ -x /root/reptyr-tmux/.ci/arm64-guest.sh ]; then
  cd /root/reptyr-tmux && env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=vt100 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    setsid /bin/bash .ci/arm64-guest.sh </dev/null >/dev/console 2>&1
  status=$?
fi
cd /
echo "ARM64-CI-EXIT=$status"
umount /root/reptyr-tmux 2>/dev/null
sync
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
sleep 30
'

arm64_host_packages() {
  export DEBIAN_FRONTEND=noninteractive
  local tool
  for tool in qemu-system-aarch64 qemu-aarch64-static update-binfmts debootstrap mkfs.ext4 ""; do
    [ -z "$tool" ] || command -v "$tool" >/dev/null || break
  done
  if [ -n "$tool" ]; then  # something is missing (apt's lists lock may be busy: wait for it)
    apt-get update -qq -o DPkg::Lock::Timeout=600 -o Acquire::Lock::Timeout=600 ||
      { sleep 30; apt-get update -qq; }
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends --no-upgrade \
      qemu-system-arm qemu-user-static binfmt-support debootstrap e2fsprogs >/dev/null
  fi
  # binfmt_misc runs the arm64 programs of the second stage through qemu-aarch64-static.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 2>/dev/null || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    echo ".ci/arm64.sh: cannot register qemu-aarch64 with binfmt_misc; cannot build the arm64 image" >&2
    return 1
  }
}

# Sets ARM64_IMAGE to the cache directory holding root.img, vmlinuz and initrd.img, building it if missing.
arm64_image() {
  local mirror key lock
  mirror=$(host_archive "$SUITE")
  [ -n "$mirror" ] || { echo ".ci/arm64.sh: the host's apt has no source for Debian $SUITE" >&2; return 1; }
  key=$(printf '%s\n' "$SUITE" "${ARM64_PACKAGES[*]}" "${ARM64_INITRD_MODULES[*]}" "$ARM64_INIT" "$mirror" |
    sha256sum | cut -c1-12)
  ARM64_IMAGE=$CACHE_DIR/arm64-$SUITE-$key
  mkdir -p "$CACHE_DIR"
  exec {lock}>"$CACHE_DIR/arm64.lock"
  flock "$lock"  # two runs at once build it once
  if [ -s "$ARM64_IMAGE/root.img" ]; then
    echo "using the cached arm64 image $ARM64_IMAGE"
  else
    arm64_build "$mirror" "$ARM64_IMAGE" || { exec {lock}>&-; return 1; }
    find "$CACHE_DIR" -maxdepth 1 -name "arm64-$SUITE-*" ! -path "$ARM64_IMAGE" -exec rm -rf {} +
  fi
  exec {lock}>&-
}

arm64_build() {
  local mirror=$1 out=$2 root include kernel started=$SECONDS
  BUILD_DIR=$(mktemp -d /var/tmp/reptyr-tmux-arm64-build.XXXXXX)  # taken down by the caller's trap
  root=$BUILD_DIR/root
  include=$(IFS=,; echo "${ARM64_PACKAGES[*]}")
  echo "debootstrap --arch=arm64 --foreign --variant=minbase $SUITE from $mirror"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" \
    >"$BUILD_DIR/debootstrap.log" 2>&1 || { tail -n 30 "$BUILD_DIR/debootstrap.log"; return 1; }
  mkdir -p "$root/etc/initramfs-tools" "$root/etc/dpkg/dpkg.cfg.d"
  printf 'force-confdef\nforce-confold\n' >"$root/etc/dpkg/dpkg.cfg.d/ci-keep-our-conffiles"
  echo "update_initramfs=no" >"$root/etc/initramfs-tools/update-initramfs.conf"
  echo "second stage under qemu-user-static ($(( (SECONDS - started) / 60 )) min so far)"
  env -i PATH="$ROOT_PATH" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive INITRD=No \
    "$CHROOT" "$root" /debootstrap/debootstrap --second-stage >"$BUILD_DIR/second-stage.log" 2>&1 ||
    { tail -n 30 "$BUILD_DIR/second-stage.log"; return 1; }
  arm64_configure "$root"
  kernel=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)")
  kernel=${kernel#vmlinuz-}
  echo "one initrd for $kernel ($(( (SECONDS - started) / 60 )) min so far)"
  printf '%s\n' "${ARM64_INITRD_MODULES[@]}" >"$root/etc/initramfs-tools/modules"
  sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$root/etc/initramfs-tools/initramfs.conf"
  env -i PATH="$ROOT_PATH" "$CHROOT" "$root" update-initramfs -c -k "$kernel" >"$BUILD_DIR/initrd.log" 2>&1 ||
    { tail -n 30 "$BUILD_DIR/initrd.log"; return 1; }
  env -i PATH="$ROOT_PATH" "$CHROOT" "$root" apt-get clean
  mkdir -p "$out.part"
  cp "$root/boot/vmlinuz-$kernel" "$out.part/vmlinuz"
  cp "$root/boot/initrd.img-$kernel" "$out.part/initrd.img"
  truncate -s 6G "$out.part/root.img"
  mkfs.ext4 -q -L arm64-root -d "$root" "$out.part/root.img"
  rm -rf "$out" && mv "$out.part" "$out"
  echo "built $out in $(( (SECONDS - started) / 60 )) min"
  take_down "$BUILD_DIR" && BUILD_DIR=
}

# What a test machine needs beyond the packages: the init above, a hostname, no root password prompt
# anywhere, and sshd's host keys (made by its postinst) kept.
arm64_configure() {
  local root=$1
  printf '%s' "$ARM64_INIT" >"$root/sbin/ci-init"
  chmod 755 "$root/sbin/ci-init"
  echo arm64-ci >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 arm64-ci\n::1 localhost\n' >"$root/etc/hosts"
  echo "/dev/vda / ext4 rw 0 1" >"$root/etc/fstab"
  echo "update_initramfs=yes" >"$root/etc/initramfs-tools/update-initramfs.conf"
}
