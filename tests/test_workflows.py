"""The GitHub workflows: every action on its Node 24 major, and the report's posting step (scripts/post_report.py)
against a stand-in for GitHub's API on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.http_server import serve_github
from tests.workspace import ROOT, child_env

# The first major of each action whose action.yml says `runs.using: node24` (GitHub runs Node 20 actions no
# more: changelog 2025-09-19). An action not listed fails the test until its entry is added, from its action.yml.
NODE24_SINCE = {"actions/checkout": 5, "actions/setup-python": 6, "actions/setup-node": 5}

REPO, PR, TOKEN = "me/lorapipe", 7, "ghs_" + "standin" * 4
WATERMARK = re.compile(r'!\[\]\(https://cml\.dev/watermark\.png#[0-9a-f]+ "CML watermark lorapipe report"\)')
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def node20_actions(workflow: dict) -> list[str]:
    """The `uses:` of a workflow that run on an older Node than 24, or whose Node is not known (not in NODE24_SINCE)."""
    found = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            action, _, ref = step.get("uses", "./").partition("@")
            if action.startswith(("./", "docker://")):
                continue
            major = re.fullmatch(r"v(\d+)(\.\d+)*", ref)
            if action not in NODE24_SINCE or not major or int(major[1]) < NODE24_SINCE[action]:
                found.append(step["uses"])
    return found


def test_every_workflow_runs_its_actions_on_node_24():
    workflows = sorted((ROOT / ".github/workflows").glob("*.yml"))
    assert workflows
    for path in workflows:
        assert node20_actions(yaml.safe_load(path.read_text())) == [], path.name


@pytest.mark.parametrize("uses", ["actions/checkout@v4", "actions/setup-python@v5", "iterative/setup-cml@v2"])
def test_a_node_20_major_or_an_unknown_action_is_rejected(uses):
    assert node20_actions({"jobs": {"j": {"steps": [{"uses": uses}, {"uses": "actions/checkout@v7"}]}}}) == [uses]


def post(tmp_path: Path, api: str, run: int, cml: str) -> subprocess.CompletedProcess:
    """post_report.py on this run's report (one chart beside it), with CML `missing`, `working` or `failing`."""
    folder = tmp_path / f"run{run}"
    (folder / "report_images").mkdir(parents=True)
    (folder / "report_images/loss.png").write_bytes(PNG + bytes([run]))
    (folder / "report.md").write_text(f"## lorapipe report, push {run}\n\n![loss curves](./report_images/loss.png)\n")
    event = folder / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": f"{run:02d}" + "ab" * 19}}}))
    bin_dir = tmp_path / f"bin-{cml}"
    if cml != "missing" and not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "cml").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT}/tests/cml_standin.py" "$@"\n')
        (bin_dir / "cml").chmod(0o755)
    env = child_env(
        REPO_TOKEN=TOKEN,
        GITHUB_REPOSITORY=REPO,
        GITHUB_EVENT_PATH=str(event),
        GITHUB_API_URL=api,
        GITHUB_SERVER_URL="https://github.com",
        PATH=f"{bin_dir}:/usr/bin:/bin",
    )
    if cml == "failing":
        env["CML_STANDIN_FAIL"] = "1"
    command = [sys.executable, str(ROOT / "scripts/post_report.py"), str(folder / "report.md")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_one_comment_per_pull_request_whether_cml_posts_or_the_api(tmp_path):
    """Push after push, with CML missing, working or failing, the pull request holds one report comment, the
    newest report, its chart linked where that path put it; nobody else's comment is touched. 35 comments come
    first, so ours is past the first page, which is all CML reads: its second comment is removed."""
    with serve_github(REPO, TOKEN) as github:
        others = [github.add_comment(PR, f"review note {i}", user="alice") for i in range(34)]
        others.append(github.add_comment(PR, "another workflow's comment"))  # the same bot user as ours
        before = [dict(c) for c in others]
        for run, cml in enumerate(["missing", "missing", "working", "working", "failing", "working", "missing"]):
            result = post(tmp_path, github.url, run, cml)
            assert result.returncode == 0, result.stderr
            ours = [c for c in github.comments[PR] if WATERMARK.search(c["body"])]
            assert len(ours) == 1, (run, cml, [c["body"][:40] for c in ours])
            body = ours[0]["body"]
            assert body.startswith(f"## lorapipe report, push {run}\n")
            writes = {agent for method, _, agent in github.requests if method in ("POST", "PATCH")}
            if cml == "working":
                assert re.search(r"!\[loss curves\]\(https://asset\.cml\.dev/\w+\?cml=png\)", body)
                assert writes == {"cml-standin"}  # the API path stayed out of it
            else:
                assert "cml" in result.stderr  # why the API posted it: "not installed" or "failed (1: ...)"
                link = re.search(r"!\[loss curves\]\(https://github\.com/me/lorapipe/raw/(\w+)/(\S+)\)", body)
                assert link and link[2] == f"pr-{PR}/{run:02d}{'ab' * 5}/loss.png"
                assert github.raw(link[1], link[2]) == PNG + bytes([run])  # the image, at the commit linked
                assert github.refs["heads/lorapipe-report-assets"] == link[1]
            github.requests.clear()
        assert [c for c in github.comments[PR] if not WATERMARK.search(c["body"])] == before


def test_a_refused_token_fails_in_one_line(tmp_path):
    with serve_github(REPO, "another-token") as github:
        result = post(tmp_path, github.url, 0, "missing")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: GitHub API ")
    assert "401 Bad credentials" in result.stderr and "Traceback" not in result.stderr
