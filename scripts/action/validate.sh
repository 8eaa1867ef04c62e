#!/usr/bin/env bash
# Validates runbooks for the GitHub Action (action.yml): expands INPUT_FILES (globs,
# `**` too; space or newline separated; vars files `*.vars.yaml` and directories are
# left out), then `redis-move validate --format github` on each runbook with its own
# vars file when one lies beside it (`move.yaml` -> `move.vars.yaml`, as `redis-move
# init` writes them) and the INPUT_VARS_FILES. GitHub shows the `::error
# file=...,line=...,col=...::` lines on the pull request. Exits non-zero (failing the
# job) on an invalid runbook, a file that does not exist, or a glob matching nothing.
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
  if [[ "$pattern" != *[*?[]* && ! -e "$pattern" ]]; then
    echo "::error file=$pattern,title=redis-move::\`$pattern\` does not exist"
    exit 2
  fi
  matched=($pattern)
  if [[ ${#matched[@]} -eq 0 ]]; then
    echo "::error title=redis-move::\`$pattern\` matches no file"
    exit 2
  fi
  for file in "${matched[@]}"; do
    [[ -f "$file" && "$file" != *.vars.yaml && "$file" != *.vars.yml ]] && files+=("$file")
  done
done
if [[ ${#files[@]} -eq 0 ]]; then
  echo "::error title=redis-move::no runbook among ${patterns[*]}"
  exit 2
fi
deny="${INPUT_DENY_WARNINGS:-true}"
args=(validate --format github)
[[ "${deny,,}" == "true" ]] && args+=(--deny-warnings)
for vars in "${vars_files[@]}"; do
  args+=(--vars-file "$vars")
done
status=0
for file in "${files[@]}"; do
  own=()
  beside="${file%.*}.vars.yaml"
  [[ -f "$beside" ]] && own=(--vars-file "$beside")
  command=("${args[@]}" "${own[@]}" "$file")
  echo "redis-move ${command[*]}"
  "$redis_move" "${command[@]}" || status=$?
done
exit "$status"
