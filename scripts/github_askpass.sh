#!/bin/sh
# git's GIT_ASKPASS for the pushes of push_results.sh and push_experiments.sh: it answers git's prompts
# for the GitHub host alone (GITHUB_SERVER_URL, which GitHub Actions sets; default https://github.com)
# with $GITHUB_TOKEN, read at that moment; a prompt for any other host gets nothing. The scripts set it
# in their own environment only: nothing is written to .git/config or handed to a credential helper.
host=${GITHUB_SERVER_URL:-https://github.com}
host=${host%/}
case $1 in
  "Username for '$host'"*) echo x-access-token ;;
  "Password for '${host%%://*}://x-access-token@${host#*://}'"*) printf '%s\n' "${GITHUB_TOKEN:-}" ;;
esac
