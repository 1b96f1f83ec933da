#!/usr/bin/env bash
# Run the pipeline stage by stage and send each stage that changed the results home: its outputs to
# the DVC remote and dvc.lock, params.yaml, settings.yaml and metrics/ to BRANCH on `origin`
# (scripts/push_results.sh). A machine lost mid-run (a Colab disconnect) then never costs a finished
# stage: on the next machine, check out BRANCH and run this again; `dvc pull` brings the finished
# stages back, `dvc repro` skips them and they are not pushed again. On a finished branch `dvc
# status` finds nothing to run, and one push sends whatever an interrupted push left behind.
# Training itself goes on from its mirrored checkpoints (ops.checkpoint_mirror: remote).
#
#   GITHUB_TOKEN=... bash scripts/repro_and_push.sh results/colab
set -euo pipefail
branch=${1:?usage: repro_and_push.sh BRANCH}
here=$(dirname "$0")
dvc pull --allow-missing -q || echo "nothing to pull yet"
list=$(python -m lorapipe.workspace.outbound --list)  # assignments: set -e stops here if one fails
mapfile -t results <<<"$list"
stages=()
if ! dvc status -q dvc.yaml; then
  names=$(dvc stage list --name-only dvc.yaml)
  mapfile -t stages <<<"$names"
fi
# What the branch would receive: tracked files' changes and new files' contents (whatever
# status.showUntrackedFiles says), so a stage that rewrites a not yet committed file counts too.
results_state() {
  git status --porcelain --untracked-files=all -- "${results[@]}" &&
    git diff -- "${results[@]}" &&
    git ls-files --others --exclude-standard -- "${results[@]}" | git hash-object --stdin-paths
}
unpushed=yes  # a stage that ran without changing the results may still have outputs the remote lacks
for stage in "${stages[@]}"; do
  before=$(results_state)
  dvc repro "$stage"
  after=$(results_state)
  if [ "$after" != "$before" ]; then
    bash "$here/push_results.sh" "$branch"
    unpushed=no
  else
    unpushed=yes
  fi
done
if [ "$unpushed" = yes ]; then bash "$here/push_results.sh" "$branch"; fi
