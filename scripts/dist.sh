#!/usr/bin/env bash
# Builds the release binaries of batond and embedded-nats for every board
# baton targets, with the version stamped in, and their checksums:
#
#   dist/<version>/batond-linux-arm64        Pi 3/4/5 on a 64-bit kernel
#   dist/<version>/batond-linux-armv7        Pi 2/3 on 32-bit Raspberry Pi OS (GOARM=7)
#   dist/<version>/batond-linux-armv6        Pi Zero and Pi 1 (GOARM=6)
#   dist/<version>/batond-linux-amd64        mini PCs, lab machines
#   dist/<version>/embedded-nats-linux-<arch>   the same four
#   dist/<version>/SHA256SUMS                sha256sum format, file names only
#
# A 32-bit Raspberry Pi OS on a Pi 4/5 runs a 64-bit kernel (uname -m says
# aarch64) with 32-bit user space: either armv7 or arm64 runs there, as
# both are static. Every binary is static (CGO_ENABLED=0), stripped and
# built with -trimpath. After building, each binary is run once ("version")
# natively or under qemu-user when it is installed, and must print the
# version: a binary that does not start on its architecture fails here.
#
# Usage: scripts/dist.sh VERSION [OUTDIR]   (OUTDIR defaults to dist)
set -euo pipefail

version=${1:?usage: scripts/dist.sh VERSION [OUTDIR]}
out=${2:-dist}/$version
go=${GO:-go}
module=github.com/baton-relay/baton

# name  GOARCH  GOARM  emulator to run it here (empty: native)
targets=(
  "arm64 arm64 -     qemu-aarch64-static"
  "armv7 arm   7     qemu-arm-static -cpu cortex-a7"
  "armv6 arm   6     qemu-arm-static -cpu arm1176"
  "amd64 amd64 -     "
)

rm -rf "$out"
mkdir -p "$out"
for t in "${targets[@]}"; do
  read -r name goarch goarm _ <<<"$t"
  for cmd in batond embedded-nats; do
    bin="$cmd-linux-$name"
    env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="${goarm/-/}" \
      "$go" build -trimpath \
      -ldflags "-s -w -X $module/internal/daemon.Version=$version" \
      -o "$out/$bin" "./cmd/$cmd"
  done
done
(cd "$out" && sha256sum -- batond-* embedded-nats-* >SHA256SUMS)

# Run each binary once on its own architecture.
host=$(uname -m)
for t in "${targets[@]}"; do
  read -r name goarch _ emu <<<"$t"
  if [ "$goarch" = amd64 ] && [ "$host" = x86_64 ]; then
    emu=""
  elif [ -z "$emu" ] || ! command -v "${emu%% *}" >/dev/null 2>&1; then
    echo "dist: *** NOT RUN: no emulator here to try the $name binaries (scripts/install-deps.sh installs qemu-user-static as root) ***" >&2
    [ "${CI:-}" = true ] && { echo "dist: CI=true, so this is a failure" >&2; exit 1; }
    continue
  fi
  for cmd in batond embedded-nats; do
    got=$($emu "$out/$cmd-linux-$name" version)
    if [ "$got" != "$cmd $version" ]; then
      echo "dist: $cmd-linux-$name version printed '$got', want '$cmd $version'" >&2
      exit 1
    fi
  done
  echo "dist: $name binaries run and print version $version${emu:+ (under ${emu%% *})}"
done

file "$out"/* 2>/dev/null | sed "s|$out/||" || true
echo "dist: wrote $out (checksums in $out/SHA256SUMS)"
