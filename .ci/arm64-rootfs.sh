#!/usr/bin/env bash
# Build (once) and cache an emulated arm64 Debian root filesystem with ai-edge-litert, used by the
# `arm64-emulated` device and tests/test_sparse_arm64.py to see XNNPACK's sparse path engage
# (XNNPACK turns that path off on x86 with AVX, so it can only be observed on ARM).
#
#   bash .ci/arm64-rootfs.sh            build if missing (~3-4 min, ~300 MB), then a smoke run
#   bash .ci/arm64-rootfs.sh --check    only the smoke run (exit 1 when the cache is missing)
#   bash .ci/arm64-rootfs.sh --remove   delete the cache
#
# Where: $EDGECONV_ARM64_ROOTFS, default ~/.cache/edgeconv/arm64-rootfs (never inside the repo).
# Needs root and Debian packages qemu-user-static, binfmt-support, debootstrap (installed here with
# apt-get when missing). Python packages for the chroot are fetched on the host as aarch64 wheels
# (pip inside the chroot has no CA bundle) and unpacked with `pip install --target`.
set -euo pipefail

ROOTFS="${EDGECONV_ARM64_ROOTFS:-$HOME/.cache/edgeconv/arm64-rootfs}"
SUITE=bookworm          # its python3 is 3.11, which the wheels below are chosen for
PYDIR=/opt/edgeconv-py  # inside the rootfs; the device runner puts it on PYTHONPATH
STAMP="$ROOTFS/.edgeconv-ready"
PYTHON="${PYTHON:-python3}"  # any Python with pip; only used to fetch and unpack wheels
LITERT_PIN="ai-edge-litert==2.3.0"
NUMPY_PIN="numpy==2.4.6"

log() { printf 'arm64-rootfs: %s\n' "$*" >&2; }

mirror() {
  # The Debian mirror apt is configured with (deb822 or one-line sources), else the default.
  local m
  m=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
      | head -n1 | awk '{print $2}') || true
  echo "${m:-http://deb.debian.org/debian}"
}

need_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -e /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

enable_binfmt() {
  # binfmt_misc starts unmounted in containers; with it and the qemu-aarch64 entry (flag F, so the
  # interpreter needs no copy inside the rootfs) a plain chroot runs arm64 binaries.
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { log "qemu-aarch64 binfmt entry missing"; exit 1; }
}

write_cpuinfo() {
  # qemu-user passes the host's x86 /proc/cpuinfo through, which crashes Python's platform probing
  # and misleads cpuinfo; the runner bind-mounts this Neoverse-N1 description over /proc/cpuinfo.
  local n i out="$ROOTFS/etc/edgeconv-cpuinfo"
  n=$(nproc)
  : > "$out"
  for ((i = 0; i < n; i++)); do
    cat >> "$out" <<EOF
processor	: $i
BogoMIPS	: 243.75
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1

EOF
  done
}

install_wheels() {
  # manylinux_2_27_aarch64 must be named: with manylinux2014 alone pip silently picks an old
  # ai-edge-litert. --target unpacks on the host, so nothing in the chroot needs network or TLS.
  log "installing $LITERT_PIN $NUMPY_PIN (aarch64, cp311) into $PYDIR"
  rm -rf "$ROOTFS$PYDIR"
  "$PYTHON" -m pip install --quiet --no-cache-dir --no-warn-conflicts --only-binary=:all: --target "$ROOTFS$PYDIR" \
    --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 \
    "$LITERT_PIN" "$NUMPY_PIN"
}

with_mounts() {
  # Bind mounts the runtime needs: /proc with an arm64 cpuinfo over it, /sys (without it cpuinfo
  # fails and TFLite silently falls back to its reference kernels instead of XNNPACK), /dev.
  # Always unmounted again, whatever the command does.
  local mounted=()
  cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}"; done
  }
  trap cleanup EXIT
  mount -t proc proc "$ROOTFS/proc" && mounted+=("$ROOTFS/proc")
  mount --bind "$ROOTFS/etc/edgeconv-cpuinfo" "$ROOTFS/proc/cpuinfo" && mounted+=("$ROOTFS/proc/cpuinfo")
  mount --rbind /sys "$ROOTFS/sys" && mount --make-rslave "$ROOTFS/sys" && mounted+=("$ROOTFS/sys")
  mount --bind /dev "$ROOTFS/dev" && mounted+=("$ROOTFS/dev")
  "$@"
  cleanup
  trap - EXIT
}

smoke() {
  log "smoke run: python3 + ai_edge_litert inside the chroot"
  with_mounts chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin PYTHONPATH="$PYDIR" /usr/bin/python3 -c \
    'import platform, numpy, ai_edge_litert.interpreter as i; print("arm64 ok:", platform.machine(), "numpy", numpy.__version__)'
}

build() {
  need_host_tools
  enable_binfmt
  local t0=$SECONDS
  if [ ! -x "$ROOTFS/usr/bin/python3" ] || [ ! -e "$ROOTFS/.edgeconv-stage2" ]; then
    rm -rf "$ROOTFS"
    mkdir -p "$ROOTFS"
    log "debootstrap $SUITE arm64 into $ROOTFS from $(mirror)"
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$(mirror)" >/dev/null
    log "second stage (emulated)"
    chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >/dev/null
    touch "$ROOTFS/.edgeconv-stage2"
  fi
  write_cpuinfo
  install_wheels
  # Trim what no run needs (apt lists, docs, caches) to keep the CI cache small.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
         "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
  smoke
  date -u +%FT%TZ > "$STAMP"
  log "ready in $((SECONDS - t0)) s: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
}

case "${1:-}" in
  --check)
    [ -e "$STAMP" ] || { log "no cached rootfs at $ROOTFS; build it with: bash .ci/arm64-rootfs.sh"; exit 1; }
    need_host_tools; enable_binfmt; smoke ;;
  --remove)
    rm -rf "$ROOTFS" ;;
  "")
    if [ -e "$STAMP" ]; then log "cached: $ROOTFS"; enable_binfmt; smoke; else build; fi ;;
  *)
    echo "usage: $0 [--check|--remove]" >&2; exit 2 ;;
esac
