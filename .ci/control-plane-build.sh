#!/usr/bin/env bash
# Builds the Kubernetes backend's integration-test cluster once, offline, into a cache:
# kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes`
# source package (with its vendor/ tree) and Debian's Go, plus Debian's etcd. About 6
# minutes on 2 cores; later calls find the binaries and return at once.
#
#   .ci/control-plane-build.sh            # binaries in $GEMBATCH_K8S_CACHE (default
#                                         # ~/.cache/gembatch/control-plane)
#
# One fix is required (see the README's "Kubernetes backend" tests): the vendored
# modern-go/reflect2 1.0.1 panics under Go >= 1.18 on every JSON response; it is replaced
# by Debian's 1.0.2 (same API).
set -euo pipefail

CACHE="${GEMBATCH_K8S_CACHE:-$HOME/.cache/gembatch/control-plane}"
BIN="$CACHE/bin"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]] && command -v etcd >/dev/null; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE" "$BIN"

if [[ ! -f /etc/apt/sources.list.d/gembatch-deb-src.sources ]]; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  cat > /etc/apt/sources.list.d/gembatch-deb-src.sources <<EOF
Types: deb-src
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
apt-get update -qq >/dev/null
apt-get install -y -qq golang-go etcd-server rsync make >/dev/null

SRC="$CACHE/src"
if [[ ! -d "$SRC" ]]; then
  work="$(mktemp -d "$CACHE/fetch.XXXX")"
  (cd "$work" && apt-get source -qq kubernetes >/dev/null 2>&1 && apt-get download -qq golang-github-modern-go-reflect2-dev)
  tree="$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)"
  # The required fix: reflect2 1.0.2 in place of the vendored 1.0.1.
  dpkg-deb -x "$work"/golang-github-modern-go-reflect2-dev_*.deb "$work/reflect2"
  vendored="$tree/vendor/github.com/modern-go/reflect2"
  rm -f "$vendored"/*.go "$vendored"/*.s
  cp "$work"/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$vendored"/
  cp "$work"/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$vendored"/ 2>/dev/null || true
  rm -f "$vendored"/*_test.go
  mv "$tree" "$SRC"
  rm -rf "$work"
fi

cd "$SRC"
export CGO_ENABLED=0 GOFLAGS=-mod=vendor GOCACHE="$CACHE/go-build" GOPATH="$CACHE/gopath"
make generated_files >/dev/null
make WHAT=cmd/kube-apiserver >/dev/null
make WHAT=cmd/kube-controller-manager >/dev/null
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN/"
# The sources and Go's caches (about 2 GB) are not needed once the binaries are out.
cd "$CACHE" && rm -rf "$SRC" "$CACHE/go-build" "$CACHE/gopath"
echo "$BIN"
