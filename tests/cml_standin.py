"""A stand-in for CML 0.20.6's `cml comment update --target=pr/N --watermark-title=T report.md`, which cannot be
installed here (@dvcorg/cml is not on the npm registry these machines reach). It does what CML's source does
(src/cml.js commentCreate, src/watermark.js, src/drivers/github.js): appends the watermark
`![](https://cml.dev/watermark.png#<head sha> "CML watermark T")`, replaces each local image with an asset-store
URL, lists the pull request's comments (the first page only: CML does not paginate), edits the last one that
carries the watermark or creates one. With CML_STANDIN_FAIL set it fails before posting anything, as a broken
install or asset store would. Talks to GITHUB_API_URL, where the real CML only knows https://api.github.com.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.request
from pathlib import Path


def call(method: str, url: str, body: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Authorization", f"token {os.environ['REPO_TOKEN']}")
    request.add_header("User-Agent", "cml-standin")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def main(argv: list[str]) -> int:
    if os.environ.get("CML_STANDIN_FAIL"):
        print("Error: request to https://asset.cml.dev failed: 502 Bad Gateway", file=sys.stderr)
        return 1
    assert argv[:2] == ["comment", "update"], argv
    options = dict(arg.removeprefix("--").split("=", 1) for arg in argv[2:] if arg.startswith("--"))
    report = Path(next(arg for arg in argv[2:] if not arg.startswith("--")))
    pr = int(options["target"].removeprefix("pr/"))
    sha = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text())["pull_request"]["head"]["sha"]
    title = f"CML watermark {options['watermark-title']}"

    def publish(match: re.Match) -> str:
        digest = hashlib.sha256((report.parent / match[2]).read_bytes()).hexdigest()
        return f"![{match[1]}](https://asset.cml.dev/{digest}?cml=png)"

    body = re.sub(r"!\[([^\]]*)\]\((?!\w+://)([^)\s]+)\)", publish, report.read_text())
    body += f'\n\n![](https://cml.dev/watermark.png#{sha} "{title}")'
    api = f"{os.environ['GITHUB_API_URL']}/repos/{os.environ['GITHUB_REPOSITORY']}"
    marker = re.compile(rf'!\[\]\(https://cml\.dev/watermark\.png#[0-9a-fA-F]+ "{re.escape(title)}"\)')
    ours = [c for c in call("GET", f"{api}/issues/{pr}/comments") if marker.search(c["body"])]
    if ours:
        comment = call("PATCH", f"{api}/issues/comments/{ours[-1]['id']}", {"body": body})
    else:
        comment = call("POST", f"{api}/issues/{pr}/comments", {"body": body})
    print(comment["html_url"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
