#!/usr/bin/env bash
# Check out the branch a run's results go to: origin's BRANCH when it grew from LAUNCH (what a
# preempted VM or a disconnected Colab pushed of this very commit's run), else a new branch from
# LAUNCH: BRANCH when origin has none, or BRANCH-<LAUNCH's short sha> when origin's BRANCH holds
# another commit's results (a relaunch after a fix), which is said in one line. Continuing that
# branch would run the old commit's code and record its results as the new commit's.
#
#   bash scripts/results_branch.sh results/colab [LAUNCH]   # LAUNCH: the commit launched (default HEAD)
set -euo pipefail
branch=${1:?usage: results_branch.sh BRANCH [LAUNCH]}
launch=$(git rev-parse --verify "${2:-HEAD}^{commit}")
if ! git check-ref-format --branch "$branch" >/dev/null 2>&1; then
  echo "error: $branch is not a valid git branch name (git check-ref-format)" >&2
  exit 1
fi
short=$(git rev-parse --short=10 "$launch")
export GIT_TERMINAL_PROMPT=0  # a private origin without credentials fails in one message, never waits for input
askpass="$(cd "$(dirname "$0")" && pwd)/github_askpass.sh"  # hands GITHUB_TOKEN to git, where the checkout has it
origin_git() {
  if [ -n "${GITHUB_TOKEN:-}" ] && [ -f "$askpass" ]; then GIT_ASKPASS=$askpass git -c credential.helper= "$@"; else git "$@"; fi
}
why=""  # why not BRANCH itself
for candidate in "$branch" "$branch-$short"; do
  # ls-remote exits 2 when origin has no such branch (normal: a first run); other failures (an origin
  # that is unreachable or refuses the credentials) are shown as git prints them, and stop the run.
  found=0
  origin_git ls-remote --exit-code --heads origin "refs/heads/$candidate" >/dev/null || found=$?
  if [ "$found" -eq 2 ]; then
    git checkout -q -B "$candidate" "$launch"
    echo "results go to $candidate, a new branch from $short${why:+: $why}"
    exit 0
  elif [ "$found" -ne 0 ]; then
    echo "error: cannot read origin's branches (git ls-remote exited $found; its message is above)" >&2
    exit 1
  fi
  origin_git fetch -q origin "refs/heads/$candidate"
  if git merge-base --is-ancestor "$launch" FETCH_HEAD; then
    git checkout -q -B "$candidate" FETCH_HEAD
    echo "going on from origin/$candidate${why:+ ($why)}"
    exit 0
  fi
  why="origin/$candidate holds another commit's results (it did not grow from $short)"
done
echo "error: origin/$branch-$short exists but did not grow from $short; delete it on origin, or set another branch" >&2
exit 1
