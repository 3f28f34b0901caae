#!/usr/bin/env bash
# Installs the system packages baton's tests need. Go modules come from
# go.mod and are fetched by the go command itself.
#
# As root: installs missing Debian packages with apt-get.
# Otherwise: says what is missing; the tests that need it will SKIP (and
# fail under CI=true).
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables) # fault injection in namespaces
# The ARM tests (scripts/test-arch.sh) run the cross-compiled test binaries
# under qemu-user through go test -exec; no binfmt registration needed.
command -v qemu-aarch64-static >/dev/null 2>&1 && command -v qemu-arm-static >/dev/null 2>&1 ||
  need+=(qemu-user-static)

# The live page's browser test (internal/daemon/livepage_test.go) drives
# Debian's headless chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)

# --- deploy/ansible tests: Ansible and its linters, sshd for the
# namespace hosts the rollout test logs into, systemd-analyze for the unit.
command -v ansible-playbook >/dev/null 2>&1 || need+=(ansible-core)
command -v ansible-lint >/dev/null 2>&1 || need+=(ansible-lint)
command -v yamllint >/dev/null 2>&1 || need+=(yamllint)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# --- end deploy/ansible

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${need[*]}; not root, so not installing." >&2
  echo "install-deps: the tests that need them (namespaces, browser, ARM under qemu, Ansible) will SKIP." >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${need[*]} and no apt-get to install them" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
