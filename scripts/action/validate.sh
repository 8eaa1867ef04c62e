#!/usr/bin/env bash
# Validates runbooks for the GitHub Action (action.yml): expands INPUT_FILES (globs,
# `**` too; space or newline separated), then `redis-move validate --format github`
# on them, whose `::error file=...,line=...,col=...::` lines GitHub shows on the pull
# request. Exits non-zero (failing the job) on an invalid runbook, or when a glob
# matches nothing.
set -euo pipefail
shopt -s nullglob globstar
redis_move="${REDIS_MOVE:-redis-move}"
# Split on whitespace without expanding yet, then expand each pattern on its own.
set -f
patterns=(${INPUT_FILES:-runbooks/*.yaml})
vars_files=(${INPUT_VARS_FILES:-})
set +f
files=()
for pattern in "${patterns[@]}"; do
  matched=($pattern)
  if [[ ${#matched[@]} -eq 0 ]]; then
    echo "::error title=redis-move::\`$pattern\` matches no file"
    exit 2
  fi
  files+=("${matched[@]}")
done
args=(validate --format github)
[[ "${INPUT_DENY_WARNINGS:-true}" == "true" ]] && args+=(--deny-warnings)
for vars in "${vars_files[@]}"; do
  args+=(--vars-file "$vars")
done
echo "redis-move ${args[*]} ${files[*]}"
exec "$redis_move" "${args[@]}" "${files[@]}"
