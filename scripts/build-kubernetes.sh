#!/usr/bin/env bash
# Builds the real-Kubernetes test guest's components from the Go module registry into a cache
# outside the checkout, once per version: one binary `kube` (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet of the release pinned in
# fixtures/test-guest/real-kubernetes/go.mod) and a pause image for containerd.
# containerd, runc and the CNI plugins come from Debian (scripts/setup-host.sh).
#
#   scripts/build-kubernetes.sh     build when missing or when the sources changed; quick otherwise
#
# Without Go or the module registry it says so in one line and exits 0: the rest of the
# install stands, and the tests that need the real guest say why they cannot run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
self=$root/scripts/build-kubernetes.sh
src=$root/fixtures/test-guest/real-kubernetes
cache_root=/var/cache/k3s-vm/kubernetes # where real-kubernetes.nix looks (its kubernetesCache)

say() { echo "build-kubernetes: $*" >&2; }

version=$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$src/go.mod")
if [ -z "$version" ]; then
  say "cannot read the Kubernetes version from $src/go.mod"
  exit 1
fi
dir=$cache_root/$version

if ! command -v go >/dev/null 2>&1; then
  say "Go is not installed: Kubernetes $version is not built, so the tests on the real-Kubernetes test guest will be skipped (install Go 1.24 or newer and run $self)"
  exit 0
fi

# The sources that make the build: a change to any of them builds again.
key=$(cd "$src" && cat go.mod go.sum main.go pause/main.go "$self" | sha256sum | cut -d' ' -f1)
if [ -f "$dir/stamp" ] && [ "$(sed -n 's/^sources=//p' "$dir/stamp")" = "$key" ] &&
  [ -x "$dir/bin/kube" ] && [ -f "$dir/pause.tar" ]; then
  exit 0
fi

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
mkdir -p "$dir" 2>/dev/null || { sudo_if_needed mkdir -p "$dir" && sudo_if_needed chown "$(id -u):$(id -g)" "$dir"; }

started=$(date +%s)
say "Kubernetes $version into $dir: downloading modules"
if ! (cd "$src" && go mod download) >"$dir/download.log" 2>&1; then
  say "the Go module registry did not serve Kubernetes $version ($(tail -n 1 "$dir/download.log")): the tests on the real-Kubernetes test guest will be skipped; see $dir/download.log"
  exit 0
fi

say "compiling etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet (a cold build takes a while on a small machine)"
pkg=k8s.io/component-base/version
minor=${version#v1.}
minor=${minor%%.*}
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
mkdir -p "$dir/bin"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/kube.tmp" .)
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin/pause.tmp" ./pause)
mv "$dir/bin/kube.tmp" "$dir/bin/kube"
mv "$dir/bin/pause.tmp" "$dir/bin/pause"

# The pause image as a `docker save` archive (what `ctr images import` reads): one layer with
# /pause, a config naming it as the entry point, and the manifest.
say "pause image"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs" "$work/image"
cp "$dir/bin/pause" "$work/rootfs/pause"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" pause
layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$work/image/$layer"
mv "$work/layer.tar" "$work/image/$layer/layer.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$layer" >"$work/image/config.json"
config=$(sha256sum "$work/image/config.json" | cut -d' ' -f1)
mv "$work/image/config.json" "$work/image/$config.json"
printf '[{"Config":"%s.json","RepoTags":["k3s-vm.test/pause:1"],"Layers":["%s/layer.tar"]}]' \
  "$config" "$layer" >"$work/image/manifest.json"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/image" -cf "$dir/pause.tar.tmp" .
mv "$dir/pause.tar.tmp" "$dir/pause.tar"

printf 'version=%s\nsources=%s\nkube_sha256=%s\n' "$version" "$key" \
  "$(sha256sum "$dir/bin/kube" | cut -d' ' -f1)" >"$dir/stamp"
say "Kubernetes $version built in $(($(date +%s) - started)) s ($(du -sh "$dir" | cut -f1) in $dir)"
