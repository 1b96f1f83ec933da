#!/usr/bin/env bash
# The cloud job (cloud/train.yaml's `run`): the Colab notebook's cells in a script. On a VM that
# SkyPilot replaced after a preemption it runs again from the start and goes on where the lost VM
# stopped: finished stages come back from the results branch and the DVC remote, and training
# resumes from its mirrored checkpoint. Ends with the run as a DVC experiment on `origin`.
#
#   RESULTS_BRANCH=results/sky EXPERIMENT=sky SETS="lora.r=8" DAGSHUB_USER=.. DAGSHUB_REPO=.. \
#     DAGSHUB_TOKEN=.. GITHUB_TOKEN=.. bash cloud/job.sh
set -euo pipefail
cd "$(dirname "$0")/.."
branch=${RESULTS_BRANCH:?set RESULTS_BRANCH (cloud/train.yaml sets it)}
experiment=${EXPERIMENT:?set EXPERIMENT (cloud/train.yaml sets it)}
launched=$(git rev-parse HEAD)  # the commit launched from: every sweep job's experiment is based on it

# A VM that replaces a reclaimed one goes on from what the lost one pushed to the branch; a job
# relaunched from another commit (a fix) starts a branch of its own (scripts/results_branch.sh).
bash scripts/results_branch.sh "$branch" "$launched"
branch=$(git branch --show-current)
python -m lorapipe.workspace.git_identity
python scripts/remote.py --default ${S3_ENDPOINT:+--endpoint "$S3_ENDPOINT"}
if [ -n "${DAGSHUB_USER:-}" ] && [ -z "${MLFLOW_TRACKING_URI:-}" ]; then  # as the notebook does
  # The DagsHub client checks the token (a refused one stops here, in one line) and MLflow's variables follow.
  mlflow_env=$(python -m lorapipe.workspace.dagshub_login) && eval "$mlflow_env"
fi

# The colab profile mirrors each checkpoint to the remote's bucket; SETS are this run's params.
# SETS is read by lorapipe.workspace.profiles.split_sets, as scripts/sweep.py checked it before launching.
sets=(--sets "${SETS:-}")
gpus=${SKYPILOT_NUM_GPUS_PER_NODE:-1}  # SkyPilot's: the GPUs this VM was given
if [ "$gpus" -gt 1 ]; then sets+=(--set "train.processes=$gpus"); fi
python -m lorapipe.workspace.profiles colab "${sets[@]}"
bash scripts/repro_and_push.sh "$branch"

# The same results as an experiment of the launch commit, so `dvc exp pull origin` and `dvc exp
# show` on the laptop put every job of a sweep side by side (the outputs are already in the cache).
git checkout -q --detach "$launched"
list=$(python -m lorapipe.workspace.outbound --list)  # dvc.lock, params.yaml, settings.yaml, metrics
mapfile -t results <<<"$list"
git checkout -q "$branch" -- "${results[@]}"
dvc exp save -q -f -n "$experiment"
bash scripts/push_experiments.sh "$experiment"  # checked for credentials; the token for the GitHub host alone
