#!/usr/bin/env bash
# Push DVC experiments by name to `origin` (git refs) and their outputs and run-cache to the DVC remote,
# after the credential check of everything they hold (python -m lorapipe.workspace.outbound on each one's
# dvc.lock, params.yaml, settings.yaml and metrics/). push_results.sh pushes a run's experiments with it;
# cloud/job.sh its job's.
#
#   GITHUB_TOKEN=... bash scripts/push_experiments.sh NAME...
#   bash scripts/push_experiments.sh --check NAME...     # the check alone: push nothing
#
# With GITHUB_TOKEN set, the token reaches the GitHub host only, for this push alone (github_askpass.sh).
set -euo pipefail
check_only=false
if [ "${1:-}" = --check ]; then check_only=true; shift; fi
[ $# -gt 0 ] || { echo "usage: push_experiments.sh [--check] NAME..." >&2; exit 2; }
refs=()
for name in "$@"; do
  found=$(git for-each-ref --format='%(refname)' refs/exps | grep -v '^refs/exps/exec/' | grep "/$name\$" || true)
  if [ -z "$found" ]; then
    echo "error: experiment '$name': not found (dvc exp list --all-commits names them)" >&2
    exit 1
  fi
  while read -r ref; do refs+=("$ref"); done <<<"$found"
done
for ref in "${refs[@]}"; do
  python -m lorapipe.workspace.outbound --rev "$ref"  # its lorapipe.workspace.outbound.RESULTS
done
if $check_only; then exit 0; fi
if [ -n "${GITHUB_TOKEN:-}" ]; then
  # DVC pushes through dulwich, which asks GIT_ASKPASS too; no credential helper of the user's config
  # may answer for the token or store it, so this one command reads no global or system git config.
  GIT_ASKPASS="$(cd "$(dirname "$0")" && pwd)/github_askpass.sh" GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 \
    dvc exp push -q --run-cache origin "$@"
else
  dvc exp push -q --run-cache origin "$@"
fi
for name in "$@"; do echo "pushed experiment $name to origin: dvc exp pull origin $name; dvc exp show"; done
