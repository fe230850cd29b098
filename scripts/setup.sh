#!/usr/bin/env bash
# Installs the Debian packages treadle needs, only those that are missing.
# Used by demo.sh and test.sh; safe to run again.
set -euo pipefail

packages=(build-essential cmake pkg-config libcmocka-dev valgrind "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "treadle: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
