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
dvc pull --allow-missing -q || echo "nothing to pull yet"
for stage in $(dvc stage list --name-only dvc.yaml); do
  dvc repro "$stage"
  bash "$(dirname "$0")/push_results.sh" "$branch"
done
