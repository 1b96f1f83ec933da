#!/usr/bin/env bash
# Send a run's results home so a pull request shows its report: data and models (and DVC's run-cache) to
# the DVC remote, dvc.lock + params.yaml + settings.yaml + metrics/ (lorapipe.workspace.outbound.RESULTS) committed
# to BRANCH and pushed to `origin`, and this run's DVC experiments pushed so they outlive this machine.
#
#   GITHUB_TOKEN=... bash scripts/push_results.sh results/colab [EXPERIMENT...]
#
# EXPERIMENT: the DVC experiments to push, by name. Without any, those based on the commit this script
# finds checked out: the ones `dvc exp run` made since that commit, never other commits' (no `-A`).
# Nothing that would carry a credential leaves: params.yaml and settings.yaml (every key, ops.* too), dvc.lock,
# metrics/, the commit message and each experiment's files pass the stages' own check first (lorapipe.workspace.outbound),
# which refuses in one line naming the file and key, before anything is committed or pushed.
# The token stays in the environment: github_askpass.sh hands it to git for the GitHub host alone
# (GITHUB_SERVER_URL, default https://github.com), for the pushes of this script; nothing is written to
# .git/config or to a credential helper.
set -euo pipefail
branch=${1:?usage: push_results.sh BRANCH [EXPERIMENT...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
list=$(python -m lorapipe.workspace.outbound --list)  # an assignment: set -e stops here if it fails
mapfile -t results <<<"$list"
experiments=("$@")
if [ ${#experiments[@]} -eq 0 ]; then  # DVC keeps an experiment under refs/exps/<its baseline commit>/
  base=$(git rev-parse HEAD)
  mapfile -t experiments < <(git for-each-ref --format='%(refname:lstrip=4)' "refs/exps/${base:0:2}/${base:2}/")
fi
mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- "${results[@]}")
# The files and the commit message (what ran, not where) checked; the message printed once they pass.
message=$(python -m lorapipe.workspace.outbound --commit-message "${files[@]}")
if [ ${#experiments[@]} -gt 0 ]; then bash "$here/push_experiments.sh" --check "${experiments[@]}"; fi

dvc push --run-cache -q
git checkout -q -B "$branch"
git add -- "${results[@]}"
if ! git diff --cached --quiet -- "${results[@]}"; then
  python -m lorapipe.workspace.git_identity  # a fresh VM has no identity: a repo-local one, unless there is one
  git commit -q -m "$message" -- "${results[@]}"
fi
if [ -n "${GITHUB_TOKEN:-}" ]; then  # no credential helper answers for the token or stores it
  GIT_ASKPASS="$here/github_askpass.sh" git -c credential.helper= push -q origin "$branch"
else
  git push -q origin "$branch"
fi
if [ ${#experiments[@]} -gt 0 ]; then bash "$here/push_experiments.sh" "${experiments[@]}"; fi
echo "pushed $branch to origin: open a pull request from it to see the report"
