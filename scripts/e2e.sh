#!/usr/bin/env bash
# The real NixOS K3s VM (nix/), end to end: what the e2e workflow runs, and what anyone can run
# on a machine with Nix and working KVM (and Node.js with npm):
#
#   bash scripts/e2e.sh
#
# In order: the KVM check (before anything is built, so a host without working KVM stops at
# once with KVM_UNUSABLE), the tools the examples need, the npm packages, the nixpkgs pin, the
# package itself, then test/e2e (its own Vitest config: no test guest) in a temporary state
# directory, which builds the VM, probes KVM with the VM's own QEMU and runs the examples, and
# last the examples the way a user runs them, in .k3s-vm/, reusing that build.
set -euo pipefail
cd "$(dirname "$0")/.."

export K3S_VM_ACCEL=kvm
export K3S_VM_E2E=1

step() { printf '\ne2e: == %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

step 'KVM, before anything is built'
# Needs only the package's npm dependencies (Vitest runs the TypeScript as it is); a fresh
# checkout gets them first, which builds nothing.
[ -d node_modules ] || npm ci --no-audit --no-fund
npx vitest run --config test/e2e/vitest.config.ts kvm.test.ts

step 'tools the examples need'
# examples/k8s-pull-request-pod.test.ts builds its image from a static busybox.
if [ ! -x /bin/busybox ] && [ ! -x /usr/bin/busybox ]; then
  as_root apt-get update
  as_root apt-get install -y busybox-static
fi
command -v nix-build >/dev/null || {
  echo 'e2e: error: nix-build is not on PATH; install Nix (https://nixos.org/download)' >&2
  exit 1
}

step 'the nixpkgs pin'
# Downloads the pinned tarball into the store (the build then reuses it) and fails when its
# sha256 is not the recorded one.
node scripts/pin-nixpkgs.mjs --check

step 'the package'
npm run build

step 'test/e2e: build the VM, probe KVM with its QEMU, run the examples'
npx vitest run --config test/e2e/vitest.config.ts real-vm.test.ts

step 'the examples as a user runs them (.k3s-vm/; the same build, nothing new in the store)'
npx vitest run --config examples/vitest.config.ts
