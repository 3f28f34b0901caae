#!/usr/bin/env bash
# Runs the tests of the cluster layer and the relay on the architectures
# of the Pis, not only on the build machine's:
#
#   386    natively (the 32-bit path; 64-bit atomics on unaligned fields
#          panic here, as they would on 32-bit ARM), with internal/daemon,
#          whose multi-node tests drive the relay over real sockets
#   arm64  under qemu-aarch64-static         (Pi 3/4/5, 64-bit)
#   armv7  under qemu-arm-static, GOARM=7    (Pi 2/3, 32-bit)
#   armv6  under qemu-arm-static -cpu arm1176, GOARM=6 (Pi Zero, Pi 1)
#
# through `go test -exec`, so the test binaries are the real cross-compiled
# ones. No binfmt registration is needed. Under each emulator, besides the
# packages' own tests, internal/daemon's TestBatondOverRoutedNATS runs
# three whole batond nodes (membership, relay, direct connections, real
# TCP sockets) over three NATS servers joined by explicit routes: the
# relay's integration path, without multicast.
#
# Known gap under qemu-user: Debian bookworm's qemu 7.2 does not translate
# the socket options that pin multicast to an interface (IP_MULTICAST_IF,
# MCAST_JOIN_GROUP: the guest gets ENOPROTOOPT) and passes ip_mreqn's
# interface index wrongly on 64-bit guests. baton refuses to run discovery
# without pinning its interface (it must never send on a default
# interface), so the tests that start nodes with multicast discovery on
# lo cannot run under that emulator. This script checks the emulator
# first (cluster's TestEmulatorMulticastProbe, see cluster/probe_test.go);
# when it fails with that error, the script sets TEST_ARCH_NO_MULTICAST_IF
# and the tests whose nodes then cannot open discovery skip with that
# reason (any other error still fails them), and are listed below by
# name. They run natively on amd64 (with -race) and on 386 above. With an
# emulator that translates the options, everything runs.
#
# Without qemu-user-static: a loud SKIP, and a failure under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}

pkgs=(./cluster ./relay ./internal/natsproto ./internal/hist)

skip() {
  echo "*** SKIP: $* ***" >&2
  if [ "${CI:-}" = true ]; then
    echo "*** CI=true, so a skip is a failure. ***" >&2
    exit 1
  fi
}

timed() {
  local label=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "test-arch: $label passed in $(($(date +%s) - start)) s"
}

timed "386 (native)" env GOARCH=386 "$go" test -count=1 "${pkgs[@]}" ./internal/daemon

# name  GOARCH  GOARM  emulator
targets=(
  "arm64 arm64 -  qemu-aarch64-static"
  "armv7 arm   7  qemu-arm-static -cpu cortex-a7"
  "armv6 arm   6  qemu-arm-static -cpu arm1176"
)
for t in "${targets[@]}"; do
  read -r name goarch goarm emu <<<"$t"
  if ! command -v "${emu%% *}" >/dev/null 2>&1; then
    skip "the $name tests need ${emu%% *} (Debian qemu-user-static; make deps installs it as root)"
    continue
  fi
  export GOARCH="$goarch" GOARM="${goarm/-/}"

  # Does this emulator pin multicast to an interface? The probe test opens
  # a discovery socket on lo and fails with the error when it cannot.
  skip_probe=""
  if ! probe=$("$go" test -count=1 -exec "$emu" -run '^TestEmulatorMulticastProbe$' ./cluster 2>&1); then
    if ! grep -q 'protocol not available' <<<"$probe"; then
      echo "$probe" >&2
      exit 1
    fi
    skip_probe=1
    echo "*** test-arch: $name: ${emu%% *} cannot pin multicast to lo ($(grep -o 'setsockopt: [a-z ]*' <<<"$probe" | head -1)): ***" >&2
    echo "*** the tests whose nodes need it skip here (listed below) and run natively. ***" >&2
  fi
  log=$(mktemp)
  start=$(date +%s)
  if ! env ${skip_probe:+TEST_ARCH_NO_MULTICAST_IF=1} "$go" test -v -count=1 -exec "$emu" \
    ${skip_probe:+-skip '^TestEmulatorMulticastProbe$'} "${pkgs[@]}" >"$log" 2>&1; then
    grep -v '^=== \|^--- PASS\|^    --- PASS' "$log" >&2
    rm -f "$log"
    exit 1
  fi
  grep '^ok' "$log"
  # The skip's reason is printed just before its --- SKIP line.
  grep -B1 '^--- SKIP\|^    --- SKIP' "$log" | grep -v '^=== \|^--$' >&2 || true
  if skipped=$(grep -c '^--- SKIP\|^    --- SKIP' "$log"); then
    echo "*** test-arch: $name: $skipped test(s) NOT RUN under ${emu%% *} (listed above as SKIP). ***" >&2
  fi
  rm -f "$log"
  echo "test-arch: $name (under $emu) passed in $(($(date +%s) - start)) s"
  timed "$name relay over routed servers (under $emu)" \
    "$go" test -count=1 -exec "$emu" -run '^TestBatondOverRoutedNATS$' ./internal/daemon
  unset GOARCH GOARM
done
