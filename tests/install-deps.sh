#!/bin/sh
# install-deps.sh - install the Debian 12 packages libkeyvault needs to
# build, test and run its demo. Run as root (or with sudo available).
set -eu

PACKAGES="
  build-essential autoconf automake libtool autoconf-archive pkg-config
  libssl-dev openssl libjansson-dev libsqlite3-dev sqlite3 check
  libp11-kit-dev p11-kit softhsm2 libsofthsm2 opensc
  libtss2-dev libtss2-tcti-swtpm0 swtpm swtpm-tools tpm2-tools tpm2-openssl
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus procps
  lowdown man-db
  libtss2-tcti-pcap0 libpcap-dev
  libnss3 libnss3-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools
  jq faketime
  nginx-light curl iproute2
  libengine-pkcs11-openssl
"

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
    SUDO=sudo
fi

# skip apt entirely when everything is already there
missing=
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
