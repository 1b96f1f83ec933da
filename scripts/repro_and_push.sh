#!/usr/bin/env bash
# Run the pipeline stage by stage and send each finished stage home: its outputs to the DVC
# remote and dvc.lock + metrics/ to BRANCH on `origin` (scripts/push_results.sh). A machine lost
# mid-run (a Colab disconnect) then never costs a finished stage: on the next machine, check out
# BRANCH and run this again; `dvc pull` brings the finished stages back and `dvc repro` skips them.
# Training itself goes on from its mirrored checkpoints (ops.checkpoint_mirror: remote).
#
#   GITHUB_TOKEN=... bash scripts/repro_and_push.sh results/colab
set -euo pipefail
branch=${1:?usage: repro_and_push.sh BRANCH}
here=$(dirname "$0")
dvc pull --allow-missing -q || echo "nothing to pull yet"
list=$(python -m lorapipe.workspace.outbound --list)  # an assignment: set -e stops here if it fails
mapfile -t results <<<"$list"
# A stage is pushed when it changed what the branch holds; a stage that came back from the remote is not
# pushed again. When every stage is up to date (a new machine on a finished branch) the loop is skipped
# and one push sends whatever an earlier, interrupted push left behind.
stages=()
if ! dvc status -q dvc.yaml; then mapfile -t stages < <(dvc stage list --name-only dvc.yaml); fi
pushed=no
for stage in "${stages[@]}"; do
  dvc repro "$stage"
  if [ -n "$(git status --porcelain -- "${results[@]}")" ]; then
    bash "$here/push_results.sh" "$branch"
    pushed=yes
  fi
done
if [ "$pushed" = no ]; then bash "$here/push_results.sh" "$branch"; fi
