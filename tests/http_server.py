"""Real HTTP servers on 127.0.0.1: files for download tests (Range requests, 404/500, drops, stalls, credentials),
a fixed status, a proxy that records what goes through it, a stand-in for GitHub's REST API (a pull request's
comments, the Git Data API), and DagsHub's layout (its token check, its MLflow and S3 routes passed on to real
servers)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.drop_after: int | None = None  # close the connection after this many body bytes, once
        self.stall_s = 0.0  # wait before answering
        self.requests: list[dict] = []
        self.content_type = "application/octet-stream"  # "text/html" mimics Drive's error pages
        self.authorization: str | None = None  # the Authorization header every request must carry, else 401

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.server.stall_s:
            time.sleep(self.server.stall_s)
        if self.server.authorization and self.headers.get("Authorization") != self.server.authorization:
            self.send_error(401)
            return
        if self.path.startswith("/status/"):
            self.send_error(int(self.path.rsplit("/", 1)[1]))
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.server.drop_after is not None:
            cut, self.server.drop_after = self.server.drop_after, None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection dies mid-file
            return
        # A client may hang up mid-file (a download refusing what it got): its test says what it saw.
        with suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(payload)


S = TypeVar("S", bound=ThreadingHTTPServer)


@contextmanager
def running(server: S) -> Iterator[S]:
    """`server`, answering on its own thread until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def serve(files: dict[str, bytes]) -> AbstractContextManager[FileServer]:
    return running(FileServer(files))


class StatusHandler(BaseHTTPRequestHandler):
    """Answers every request with one status: a server that refuses credentials (401) or breaks (500)."""

    status = 401

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        body = b'{"error_code": "UNAUTHENTICATED", "message": "bad credentials"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@contextmanager
def serve_status(status: int) -> Iterator[str]:
    handler = type("Handler", (StatusHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with running(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


class RecordingProxy(ThreadingHTTPServer):
    """An HTTP(S) proxy that records each request line (`CONNECT host:443 HTTP/1.1`) and closes the connection
    unanswered: a process's every outside request, on a machine with no way out."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[str] = []

    def environment(self) -> dict[str, str]:
        """The variables that route a process's requests beyond this machine through the proxy (both spellings:
        Python's urllib reads the lowercase one first)."""
        url = f"http://127.0.0.1:{self.server_address[1]}"
        names = {"HTTP_PROXY": url, "HTTPS_PROXY": url, "NO_PROXY": "127.0.0.1,localhost"}
        return names | {name.lower(): value for name, value in names.items()}


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingProxy

    def log_message(self, *args) -> None:
        pass

    def _record(self) -> None:
        self.server.requests.append(self.requestline)
        self.close_connection = True

    do_CONNECT = do_GET = do_POST = do_PUT = _record


class GitHubStandIn(ThreadingHTTPServer):
    """The part of GitHub's REST API that scripts/post_report.py and CML use: a pull request's issue comments
    (listed 30 a page unless `per_page` says otherwise, with `Link` headers, as GitHub does) and the Git Data
    API (blobs, trees, commits, refs). Every request needs `Authorization: Bearer <token>` (or `token <token>`)."""

    daemon_threads = True

    def __init__(self, repo: str, token: str) -> None:
        super().__init__(("127.0.0.1", 0), GitHubHandler)
        self.repo, self.token = repo, token
        self.comments: dict[int, list[dict]] = {}  # pull request -> its comments, oldest first
        self.objects: dict[str, dict] = {}  # sha -> {"type": "blob", "content": bytes} | tree | commit
        self.refs: dict[str, str] = {}  # "heads/<branch>" -> commit sha
        self.requests: list[tuple[str, str, str]] = []  # (method, path, User-Agent)
        self._next_id = 1000

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_comment(self, pr: int, body: str, user: str = "github-actions[bot]") -> dict:
        self._next_id += 1
        comment = {"id": self._next_id, "body": body, "user": {"login": user}}
        comment["html_url"] = f"https://github.com/{self.repo}/pull/{pr}#issuecomment-{self._next_id}"
        self.comments.setdefault(pr, []).append(comment)
        return comment

    def store(self, kind: str, **fields) -> str:
        import hashlib

        sha = hashlib.sha1(json.dumps({"type": kind, **fields}, default=str, sort_keys=True).encode()).hexdigest()
        self.objects[sha] = {"type": kind, **fields}
        return sha

    def raw(self, commit: str, path: str) -> bytes:
        """A file at a commit, as https://github.com/<repo>/raw/<commit>/<path> serves it."""
        return self.objects[self.objects[self.objects[commit]["tree"]]["entries"][path]]["content"]


class GitHubHandler(BaseHTTPRequestHandler):
    server: GitHubStandIn

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.loads(body) if body else {}
        self.server.requests.append((self.command, parts.path, self.headers.get("User-Agent", "")))
        auth = self.headers.get("Authorization", "")
        if auth not in (f"Bearer {self.server.token}", f"token {self.server.token}"):
            return self._send(401, {"message": "Bad credentials"})
        prefix = f"/repos/{self.server.repo}"
        if not parts.path.startswith(prefix):
            return self._send(404, {"message": "Not Found"})
        path, query = parts.path.removeprefix(prefix), parse_qs(parts.query)
        server, method = self.server, self.command
        if match := re.fullmatch(r"/issues/(\d+)/comments", path):
            pr = int(match[1])
            if method == "POST":
                return self._send(201, server.add_comment(pr, data["body"]))
            comments = server.comments.get(pr, [])
            size, page = min(int(query.get("per_page", ["30"])[0]), 100), int(query.get("page", ["1"])[0])
            headers = {}
            if page * size < len(comments):
                headers["Link"] = f'<{server.url}{parts.path}?per_page={size}&page={page + 1}>; rel="next"'
            return self._send(200, comments[(page - 1) * size : page * size], headers)
        if match := re.fullmatch(r"/issues/comments/(\d+)", path):
            for comments in server.comments.values():
                for comment in comments:
                    if comment["id"] == int(match[1]):
                        if method == "DELETE":
                            comments.remove(comment)
                            return self._send(204)
                        comment["body"] = data["body"]
                        return self._send(200, comment)
            return self._send(404, {"message": "Not Found"})
        if path == "/git/blobs":
            return self._send(201, {"sha": server.store("blob", content=base64.b64decode(data["content"]))})
        if path == "/git/trees":
            entries = dict(server.objects[data["base_tree"]]["entries"]) if data.get("base_tree") else {}
            entries |= {entry["path"]: entry["sha"] for entry in data["tree"]}
            return self._send(201, {"sha": server.store("tree", entries=entries)})
        if path == "/git/commits":
            sha = server.store("commit", tree=data["tree"], parents=data["parents"], message=data["message"])
            return self._send(201, {"sha": sha})
        if match := re.fullmatch(r"/git/commits/(\w+)", path):
            return self._send(200, {"sha": match[1], "tree": {"sha": server.objects[match[1]]["tree"]}})
        if match := re.fullmatch(r"/git/refs?/(heads/.+)", path):
            ref = match[1]
            if method == "GET":
                if ref not in server.refs:
                    return self._send(404, {"message": "Not Found"})
                return self._send(200, {"ref": f"refs/{ref}", "object": {"sha": server.refs[ref]}})
            if method == "PATCH":
                if not data.get("force") and server.refs.get(ref) not in server.objects[data["sha"]]["parents"]:
                    return self._send(422, {"message": "Update is not a fast forward"})
                server.refs[ref] = data["sha"]
                return self._send(200, {"ref": f"refs/{ref}", "object": {"sha": data["sha"]}})
        if path == "/git/refs" and method == "POST":
            ref = data["ref"].removeprefix("refs/")
            if ref in server.refs:
                return self._send(422, {"message": "Reference already exists"})
            server.refs[ref] = data["sha"]
            return self._send(201, {"ref": data["ref"], "object": {"sha": data["sha"]}})
        return self._send(404, {"message": "Not Found"})

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


def serve_github(repo: str, token: str) -> AbstractContextManager[GitHubStandIn]:
    return running(GitHubStandIn(repo, token))


class DagsHubStandIn(ThreadingHTTPServer):
    """DagsHub's layout on 127.0.0.1: `GET /api/v1/user` answers a valid bearer token with its user (what the
    `dagshub` client checks a token with), and `/<owner>/<repo>.mlflow/...` and `/<owner>/<repo>.s3/...` are
    passed on to a real MLflow server and a real S3 server (moto), the prefix cut off. The MLflow route wants
    basic auth as DagsHub does: the token's user, the token as password."""

    daemon_threads = True

    def __init__(self, user: str, token: str, routes: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), DagsHubHandler)
        self.user, self.token, self.routes = user, token, routes
        self.requests: list[tuple[str, str]] = []  # (method, path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class DagsHubHandler(BaseHTTPRequestHandler):
    server: DagsHubStandIn
    protocol_version = "HTTP/1.1"  # answers S3 uploads' `Expect: 100-continue` (HTTP/1.0 leaves them waiting)

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        import http.client
        from urllib.parse import urlsplit

        body = self._body()
        self.server.requests.append((self.command, self.path))
        if self.path.split("?")[0] == "/api/v1/user":
            if self.headers.get("Authorization") != f"Bearer {self.server.token}":
                return self._reply(401, b'{"message": "unauthorized"}', [("Content-Type", "application/json")])
            user = {"id": 1, "login": self.server.user, "username": self.server.user, "full_name": "", "avatar_url": ""}
            return self._reply(200, json.dumps(user).encode(), [("Content-Type", "application/json")])
        prefix = next((p for p in self.server.routes if self.path.startswith(p + "/")), None)
        if prefix is None:
            return self._reply(404, b"not found", [])
        if prefix.endswith(".mlflow"):
            expected = base64.b64encode(f"{self.server.user}:{self.server.token}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                return self._reply(401, b'{"error_code": "UNAUTHENTICATED"}', [("Content-Type", "application/json")])
        upstream = urlsplit(self.server.routes[prefix])
        hop = {"host", "connection", "transfer-encoding", "content-length", "expect"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop} | {"Content-Length": str(len(body))}
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            connection.request(self.command, self.path.removeprefix(prefix), body=body, headers=headers)
            response = connection.getresponse()
            self._reply(response.status, response.read(), response.getheaders())
        finally:
            connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def serve_dagshub(user: str, token: str, routes: dict[str, str]) -> AbstractContextManager[DagsHubStandIn]:
    return running(DagsHubStandIn(user, token, routes))
