#!/usr/bin/env bash
# Release build: static agentd and agentd-bench binaries for linux/amd64,
# linux/arm64 and darwin/arm64, the version stamped in, one archive per platform
# and a SHA256SUMS file, in dist/.
#
#   scripts/release.sh            # version from `git describe`
#   VERSION=v0.3.0 scripts/release.sh
#   PLATFORMS="linux/amd64" scripts/release.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
platforms="${PLATFORMS:-linux/amd64 linux/arm64 darwin/arm64}"
out="${DIST:-dist}"
rm -rf "$out"
mkdir -p "$out"

for p in $platforms; do
  os="${p%/*}" arch="${p#*/}"
  name="agentd-${version}-${os}-${arch}"
  dir="$out/$name"
  mkdir -p "$dir"
  for cmd in agentd agentd-bench; do
    # CGO off: pure-Go SQLite and no libc, so a binary runs on any system of its
    # platform (and in a distroless image). -trimpath keeps build paths out.
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath \
      -ldflags "-s -w -X main.version=${version}" -o "$dir/$cmd" "./cmd/$cmd"
  done
  cp LICENSE README.md CHANGELOG.md "$dir/"
  tar -C "$out" -czf "$out/$name.tar.gz" "$name"
  rm -rf "$dir"
  echo "built $out/$name.tar.gz"
done
(cd "$out" && sha256sum ./*.tar.gz > SHA256SUMS)
echo "release ${version}: $(ls "$out" | tr '\n' ' ')"
