#!/usr/bin/env bash
# Installs redis-move for the GitHub Action (action.yml): the release asset of
# INPUT_VERSION when it is a tag with one, else `cargo install --locked` from the
# action's own checkout (GITHUB_ACTION_PATH, this repository at the action's ref).
# A redis-move already on PATH at that version is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
source_dir="${GITHUB_ACTION_PATH:-$here}"
version="${INPUT_VERSION:-source}"
repository="${ACTION_REPOSITORY:-}"
root="${REDIS_MOVE_ACTION_ROOT:-$HOME/.local}"
bin_dir="$root/bin"
cargo="${CARGO:-cargo}"

want="$(sed -n 's/^version = "\(.*\)"/\1/p' "$source_dir/Cargo.toml" | head -1)"
case "$version" in
  source) ;;
  v[0-9]*) want="${version#v}" ;;
  *) echo "::error title=redis-move::version \`$version\`: give a release tag (v0.1.0) or \`source\`"; exit 2 ;;
esac
if command -v redis-move >/dev/null 2>&1 && [[ "$(redis-move --version)" == "redis-move $want" ]]; then
  echo "redis-move $want is installed: $(command -v redis-move)"
  exit 0
fi

mkdir -p "$bin_dir"
[[ -n "${GITHUB_PATH:-}" ]] && echo "$bin_dir" >>"$GITHUB_PATH"
if [[ "$version" == v* && -z "$repository" ]]; then
  echo "no repository to download $version from (github.action_repository is empty): building from source"
fi
if [[ "$version" == v* && -n "$repository" ]]; then
  asset="redis-move-$(uname -m)-unknown-linux-gnu.tar.gz"
  url="https://github.com/$repository/releases/download/$version/$asset"
  echo "downloading $url"
  if curl -fsSL --retry 3 "$url" | tar -xz -C "$bin_dir" redis-move 2>/dev/null; then
    "$bin_dir/redis-move" --version
    exit 0
  fi
  echo "no release asset $asset for $version: building from source instead"
fi
echo "cargo install --locked --path $source_dir"
"$cargo" install --locked --path "$source_dir" --root "$root"
got="$("$bin_dir/redis-move" --version)"
echo "$got"
if [[ "$got" != "redis-move $want" ]]; then
  echo "::error title=redis-move::asked for $want, but the action's ref builds ${got#redis-move }; use the action at the ref of that release"
  exit 1
fi
