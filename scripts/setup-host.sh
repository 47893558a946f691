#!/usr/bin/env bash
# Installs what the k3s-vm test suite needs on a Debian 12 host: QEMU, Nix, the test
# guest's ingredients, a Debian kernel unpacked for its vmlinuz and modules only (never
# installed as the system's kernel), and the real-Kubernetes test guest's components
# (containerd, runc and the CNI plugins from Debian; Kubernetes built by
# scripts/build-kubernetes.sh). Idempotent: quick when everything is there.
set -euo pipefail

kernel_dir=${K3S_VM_TEST_KERNEL_DIR:-/var/cache/k3s-vm/test-kernel}
packages=(qemu-system-x86 qemu-utils nix-bin busybox-static dropbear-bin qemu-guest-agent cpio openssl kmod e2fsprogs xz-utils zstd gzip openssh-client bsdutils
  containerd runc containernetworking-plugins)

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}" >&2
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if [ ! -f "$kernel_dir/vmlinuz" ] || [ ! -d "$kernel_dir/modules" ]; then
  echo "setup-host: unpacking a Debian kernel into $kernel_dir" >&2
  sudo_if_needed mkdir -p "$kernel_dir"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # The meta package names the current kernel package; download that one (not installed).
  image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$image" ]; then
    sudo_if_needed apt-get update -q
    image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  (cd "$work" && apt-get download -q "$image")
  dpkg-deb -x "$work"/*.deb "$work/root"
  release=${image#linux-image-}
  sudo_if_needed cp "$work/root/boot/vmlinuz-$release" "$kernel_dir/vmlinuz.tmp"
  sudo_if_needed rm -rf "$kernel_dir/modules"
  sudo_if_needed cp -a "$work/root/lib/modules/$release" "$kernel_dir/modules"
  sudo_if_needed mv "$kernel_dir/vmlinuz.tmp" "$kernel_dir/vmlinuz"
  echo "$release" | sudo_if_needed tee "$kernel_dir/release" >/dev/null
fi

# The real-Kubernetes test guest's Kubernetes, built once per version into its cache. Without
# Go or the module registry it says so in one line, and everything above stays installed.
bash "$(dirname "$0")/build-kubernetes.sh"
