#!/usr/bin/env bash
# What the device tests (tests/test_devices*.py, tests/test_profile*.py) need from the system.
#
#   bash .ci/services.sh
#
# - openssh-server: the tests start their own sshd from /usr/sbin/sshd on 127.0.0.1 and a free port,
#   with throwaway host/client keys in a temp dir (tests/sshd_fixture.py), and stop it afterwards.
#   Nothing here starts or configures the system's sshd.
# - openssh-client: ssh/scp, the real client the linux-arm and apple backends use.
# - adb: the real Android client; with no phone attached the tests check the "no device" path. The
#   tests start adb's local server (offline) and stop it again if they started it.
# - qemu-user-static: tests/test_onnx_host_kernels.py runs onnxruntime on an emulated AVX2-only x86
#   CPU (qemu-x86_64-static -cpu Haswell), where its u8s8 int8 kernels saturate.
# - chromium (headless) and fonts-dejavu-core: tests/test_report_html.py opens the HTML reports in a
#   real browser (every chart drawn, no console error, nothing fetched) and bench/report_bench.py
#   takes the screenshots in docs/img/.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v scp >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v adb >/dev/null || need+=(adb)
[ -x /usr/bin/qemu-x86_64-static ] || need+=(qemu-user-static)
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: do not let the package start a system sshd on port 22 while installing.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# sshd refuses to start without its privilege-separation directory when run as root.
if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; fi
/usr/sbin/sshd -V 2>&1 | head -n1 || true   # prints the OpenSSH version (sshd -V exits non-zero on some builds)
adb version | head -n1
chromium --version 2>/dev/null | head -n1 || true
