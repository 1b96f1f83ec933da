"""Post the pull-request report as one comment, updated in place on every push: CML if it works, else GitHub's API.

    REPO_TOKEN=${{ secrets.GITHUB_TOKEN }} python scripts/post_report.py report.md      # in report.yml

The pull request and its head commit come from the workflow's event (GITHUB_EVENT_PATH), the repository
and API from GITHUB_REPOSITORY and GITHUB_API_URL, as the runner sets them.

First `cml comment update`: CML uploads the report's local images to its asset store and edits the comment
that carries its watermark (a hidden image whose title names this report), or creates one. CML is in
maintenance mode (last release 2024; its npm install or its asset store can break), so when it is not
installed or fails, the same report goes through GitHub's REST API: the images are committed to the branch
ASSETS_BRANCH (Git Data API: no checkout, no push) and linked at that commit, and the comment with the
watermark is edited, or created. Both paths write CML's watermark, so each finds what the other posted.
CML 0.20.6 looks at the first 30 comments only and would then add a second one: afterwards this script
deletes every watermarked comment but the newest, so a pull request ends each run with exactly one.

Not `gh pr comment --edit-last --create-if-none`: it edits the token's last comment, and under GITHUB_TOKEN
that is any github-actions[bot] comment, another workflow's too; gh also cannot be pointed at a test server
on 127.0.0.1 (its API is https://HOST/api/v3/, or http://api.github.localhost/ on port 80).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from lorapipe.core.cli import UserError, log, run_cli

WATERMARK_TITLE = "lorapipe report"  # `cml --watermark-title`: names this report's comment among CML's others
WATERMARK_IMAGE = "https://cml.dev/watermark.png"  # CML's (src/watermark.js), the head commit as its #fragment
WATERMARK = re.compile(rf'!\[\]\({re.escape(WATERMARK_IMAGE)}#[0-9a-fA-F]+ "CML watermark {WATERMARK_TITLE}"\)')
ASSETS_BRANCH = "lorapipe-report-assets"  # the fallback's images, under pr-<number>/<head sha>/
# A markdown image whose target is a file beside the report (not a URL): what needs uploading.
LOCAL_IMAGE = re.compile(r"!\[([^\]]*)\]\((?!\w+://)([^)\s]+)\)")


class GitHub:
    """The few REST calls the fallback makes, with the workflow's token."""

    def __init__(self, api: str, repo: str, token: str) -> None:
        self.api, self.repo, self.token = api.rstrip("/"), repo, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[object, dict[str, str]]:
        url = path if path.startswith(("http://", "https://")) else f"{self.api}/repos/{self.repo}{path}"
        request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", "2022-11-28")
        request.add_header("User-Agent", "lorapipe-post-report")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
                return (json.loads(text) if text else None), dict(response.headers)
        except urllib.error.HTTPError as err:
            if method == "GET" and err.code == 404:
                return None, {}
            try:
                reason = json.loads(err.read())["message"]
            except (ValueError, KeyError, TypeError):  # not GitHub's JSON (a proxy's error page)
                reason = err.reason
            raise UserError(f"GitHub API {method} {url.removeprefix(self.api)}: {err.code} {reason}") from None
        except urllib.error.URLError as err:
            raise UserError(f"GitHub API {method} {url}: {err.reason}") from None

    def pages(self, path: str) -> list[dict]:
        """Every item of a listing, following its `Link: <...>; rel="next"` pages."""
        items: list[dict] = []
        url: str | None = f"{path}?per_page=100"
        while url:
            page, headers = self.call("GET", url)
            items += page or []
            found = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("Link", ""))
            url = found.group(1) if found else None
        return items


def watermarked(gh: GitHub, pr: int) -> list[dict]:
    """This report's comments on the pull request, oldest first."""
    return [c for c in gh.pages(f"/issues/{pr}/comments") if WATERMARK.search(c.get("body") or "")]


def upload_images(gh: GitHub, report: Path, text: str, pr: int, sha: str, server: str) -> str:
    """`text` with each local image committed to ASSETS_BRANCH and linked at that commit."""
    files = {target: report.parent / target for _, target in LOCAL_IMAGE.findall(text)}
    files = {target: path for target, path in files.items() if path.is_file()}
    if not files:
        return text
    folder = f"pr-{pr}/{sha[:12]}"
    entries = []
    for path in files.values():
        content = base64.b64encode(path.read_bytes()).decode()
        blob, _ = gh.call("POST", "/git/blobs", {"content": content, "encoding": "base64"})
        entries.append({"path": f"{folder}/{path.name}", "mode": "100644", "type": "blob", "sha": blob["sha"]})
    for _ in range(3):  # another pull request's run may move the branch between our read and our update
        ref, _ = gh.call("GET", f"/git/ref/heads/{ASSETS_BRANCH}")
        parent = ref["object"]["sha"] if ref else None
        tree_body = {"tree": entries}
        if parent:
            parent_commit, _ = gh.call("GET", f"/git/commits/{parent}")
            tree_body["base_tree"] = parent_commit["tree"]["sha"]
        tree, _ = gh.call("POST", "/git/trees", tree_body)
        message = f"Report images of pull request #{pr} at {sha[:12]}"
        parents = [parent] if parent else []
        commit, _ = gh.call("POST", "/git/commits", {"message": message, "tree": tree["sha"], "parents": parents})
        try:
            if parent:
                gh.call("PATCH", f"/git/refs/heads/{ASSETS_BRANCH}", {"sha": commit["sha"], "force": False})
            else:
                gh.call("POST", "/git/refs", {"ref": f"refs/heads/{ASSETS_BRANCH}", "sha": commit["sha"]})
            break
        except UserError as err:
            log.warning(f"post_report: {err}; trying again on the branch's new tip")
    else:
        raise UserError(f"could not update the branch {ASSETS_BRANCH} after 3 tries")
    links = {target: f"{server}/{gh.repo}/raw/{commit['sha']}/{folder}/{files[target].name}" for target in files}
    return LOCAL_IMAGE.sub(lambda m: f"![{m[1]}]({links.get(m[2], m[2])})", text)


def post_with_api(gh: GitHub, report: Path, pr: int, sha: str, server: str) -> None:
    body = upload_images(gh, report, report.read_text(), pr, sha, server)
    body += f'\n\n![]({WATERMARK_IMAGE}#{sha} "CML watermark {WATERMARK_TITLE}")'
    ours = watermarked(gh, pr)
    if ours:
        gh.call("PATCH", f"/issues/comments/{ours[-1]['id']}", {"body": body})
    else:
        gh.call("POST", f"/issues/{pr}/comments", {"body": body})


def post_with_cml(report: Path, pr: int) -> bool:
    """True when CML posted the report; False (and why, in one line) when it is missing or failed."""
    cml = shutil.which("cml")
    if not cml:
        log.info("post_report: cml is not installed; posting through GitHub's REST API")
        return False
    command = [cml, "comment", "update", f"--target=pr/{pr}", f"--watermark-title={WATERMARK_TITLE}", str(report)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        log.info(f"post_report: CML posted the report: {result.stdout.strip()}")
        return True
    last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1][:300]
    log.warning(f"post_report: cml failed ({result.returncode}: {last}); posting through GitHub's REST API")
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report's markdown; its images are files beside it")
    args = parser.parse_args(argv)
    env = os.environ
    token = env.get("REPO_TOKEN") or env.get("GITHUB_TOKEN")
    if not token or not env.get("GITHUB_REPOSITORY") or not env.get("GITHUB_EVENT_PATH"):
        raise UserError("set REPO_TOKEN, GITHUB_REPOSITORY and GITHUB_EVENT_PATH (a pull_request workflow sets both)")
    if not args.report.is_file():
        raise UserError(f"{args.report}: not found; build it with `python -m lorapipe.reporting.report`")
    event = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text())
    if "pull_request" not in event:
        raise UserError(f"{env['GITHUB_EVENT_PATH']}: not a pull_request event; nothing to comment on")
    pr, sha = event["pull_request"]["number"], event["pull_request"]["head"]["sha"]
    gh = GitHub(env.get("GITHUB_API_URL", "https://api.github.com"), env["GITHUB_REPOSITORY"], token)
    if not post_with_cml(args.report, pr):
        post_with_api(gh, args.report, pr, sha, env.get("GITHUB_SERVER_URL", "https://github.com"))
    ours = watermarked(gh, pr)
    for duplicate in ours[:-1]:  # a second comment CML added: the newest one stays
        gh.call("DELETE", f"/issues/comments/{duplicate['id']}")
    print(f"post_report: the report is comment {ours[-1]['html_url'] if ours else '(none found)'}")
    if not ours:
        raise UserError(f"no comment of this report on pull request #{pr} after posting")


if __name__ == "__main__":
    run_cli(main)
