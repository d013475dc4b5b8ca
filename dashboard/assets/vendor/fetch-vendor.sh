#!/usr/bin/env bash
# Re-fetches the vendored charting library (uPlot, MIT) from the npm registry and checks it.
# The files in this folder are a dependency, not gatewatch code: update them only with this
# script, bumping VERSION and the checksums together.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=1.6.32
# npm's published integrity of uplot@1.6.32 (the tarball), from `npm view uplot@1.6.32 dist.integrity`.
INTEGRITY='sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=='
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null)
tarball="$tmp/uplot-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[[ "$got" == "$INTEGRITY" ]] || { echo "checksum mismatch: $got" >&2; exit 1; }
tar -xzf "$tarball" -C "$tmp"
cp "$tmp/package/dist/uPlot.iife.min.js" uPlot.iife.min.js
cp "$tmp/package/dist/uPlot.min.css" uPlot.min.css
cp "$tmp/package/LICENSE" LICENSE.uPlot
sha256sum uPlot.iife.min.js uPlot.min.css LICENSE.uPlot > SHA256SUMS
echo "uplot $VERSION vendored"
