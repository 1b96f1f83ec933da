#!/usr/bin/env bash
# Send a run's results home so a pull request shows its report: data and models (and DVC's
# run-cache) to the DVC remote, dvc.lock + params.yaml + metrics/ committed to BRANCH and pushed
# to `origin`, and DVC experiments (`dvc exp run`) pushed so they outlive this machine.
#
#   GITHUB_TOKEN=... bash scripts/push_results.sh results/colab
#
# The token stays in the environment: git's credential helper (in .git/config, not tracked)
# reads it at push time, so it is never printed, put in a URL or written to a file.
set -euo pipefail
branch=${1:?usage: push_results.sh BRANCH}
if [ -n "${GITHUB_TOKEN:-}" ]; then
  # shellcheck disable=SC2016  # $GITHUB_TOKEN is expanded by the helper at push time, not here
  git config --local credential.helper '!f() { echo username=x-access-token; echo "password=$GITHUB_TOKEN"; }; f'
fi
dvc push --run-cache -q
git checkout -q -B "$branch"
git add dvc.lock params.yaml metrics
if ! git diff --cached --quiet; then
  python -m lorapipe.git_identity  # a fresh VM has no identity: a repo-local one, unless there is one
  git commit -q -m "Results: $(dvc stage list --name-only dvc.yaml | tr '\n' ' ')run on $(hostname)"
fi
git push -q origin "$branch"
if [ -n "$(dvc exp list --name-only 2>/dev/null)" ]; then
  dvc exp push --run-cache origin -A
fi
echo "pushed $branch to origin: open a pull request from it to see the report"
