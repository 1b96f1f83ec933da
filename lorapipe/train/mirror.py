"""Mirror each run's newest checkpoint to S3, so a training survives the machine it ran on.

A Colab VM that disconnects (or a spot instance, or a rebuilt runner) takes models/checkpoints/
with it. With `ops.checkpoint_mirror` set, every checkpoint is uploaded in the background while
training goes on, to `<prefix>/checkpoints/<run>/step-N/`, and `<run>/LATEST` is written last,
so it only ever names a complete upload. A machine with no local checkpoint of the run
downloads the one LATEST names before training starts; finding none, it says why in one line (nothing
mirrored yet; the mirror holds only other runs, naming the library versions that differ when they do;
the bucket unreachable): training then starts at step 0. `remote` means the DVC default
remote's bucket, endpoint and credentials (DagsHub's S3 endpoint included); an `s3://` URL takes
the usual AWS_* environment variables. Mirroring is best effort: a failure warns once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from lorapipe.core.cli import UserError, log
from lorapipe.core.credentials import redact
from lorapipe.core.outputs import atomic_dir
from lorapipe.train.checkpoints import is_checkpoint_name

LATEST = "LATEST"
IDENTITY = "IDENTITY.json"  # beside LATEST: what of a run's identity can be named (library versions)
MAX_LATEST_BYTES = 64  # far more than a checkpoint name; a hostile LATEST is not read whole


class RefusedObject(Exception):
    """What the bucket holds could write outside the run's checkpoint folder."""


def file_name(key: str, prefix: str) -> str:
    """The name of the file `key` holds right under `prefix`; RefusedObject for any other key (one
    outside the prefix, in a subfolder, or `..`), which could be written outside the target folder."""
    name = key.removeprefix(prefix)
    if not (key.startswith(prefix) and name not in ("", ".", "..") and Path(name).name == name):
        raise RefusedObject(f"object {key[:120]!r} is not a file of {prefix}")
    return name


def dvc_remote_s3() -> tuple[str, dict[str, Any]]:
    """The default DVC remote as an s3:// URL and boto3 client arguments."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            config = repo.config
            name = config["core"].get("remote")
            remote = dict(config["remote"].get(name, {})) if name else {}
    except DvcException as err:
        raise UserError(f"ops.checkpoint_mirror: 'remote' needs a DVC repo ({err})") from None
    url = remote.get("url", "")
    if not url.startswith("s3://"):
        raise UserError(
            "ops.checkpoint_mirror: 'remote' needs an S3 default DVC remote "
            f"(python scripts/remote.py --default); found {url or 'none'}"
        )
    client = {
        "endpoint_url": remote.get("endpointurl"),
        "aws_access_key_id": remote.get("access_key_id"),
        "aws_secret_access_key": remote.get("secret_access_key"),
    }
    return url.rstrip("/") + "/lorapipe", client


class CheckpointMirror:
    """Uploads checkpoints one at a time in a background thread; restores the newest."""

    def __init__(self, url: str, identity: dict[str, Any] | None = None, **client: Any) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.identity = identity or {}  # this run's nameable identity ({"versions": ...}), uploaded with it
        # A mirror that is down must fail fast: the next save waits for the previous upload.
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2})
        self._s3 = boto3.client("s3", config=config, **{k: v for k, v in client.items() if v})
        self._upload: threading.Thread | None = None
        self._warned = False
        self.uploads, self.waited_s = 0, 0.0  # how long training stood still for the mirror

    @classmethod
    def from_setting(cls, setting: str, identity: dict[str, Any] | None = None) -> CheckpointMirror | None:
        """`ops.checkpoint_mirror`: '' (none), 'remote' or an s3:// URL."""
        if not setting:
            return None
        if setting == "remote":
            url, client = dvc_remote_s3()
            return cls(url, identity, **client)
        return cls(setting, identity)

    def _key(self, fingerprint: str, *parts: str) -> str:
        return "/".join(filter(None, [self.prefix, "checkpoints", fingerprint, *parts]))

    def upload(self, checkpoint: Path) -> None:
        """Start uploading `checkpoint` (`<run>/step-N`), once the previous upload is done."""
        started = time.perf_counter()
        self.wait()
        self.waited_s += time.perf_counter() - started
        self.uploads += 1
        self._upload = threading.Thread(target=self._upload_now, args=(checkpoint,), daemon=True)
        self._upload.start()

    def wait(self) -> None:
        if self._upload is not None:
            self._upload.join()
            self._upload = None

    def _upload_now(self, checkpoint: Path) -> None:
        fingerprint = checkpoint.parent.name
        try:
            for f in sorted(checkpoint.iterdir()):
                self._s3.upload_file(str(f), self.bucket, self._key(fingerprint, checkpoint.name, f.name))
            identity = json.dumps(self.identity).encode()
            self._s3.put_object(Bucket=self.bucket, Key=self._key(fingerprint, IDENTITY), Body=identity)
            self._s3.put_object(Bucket=self.bucket, Key=self._key(fingerprint, LATEST), Body=checkpoint.name.encode())
            keep = tuple(self._key(fingerprint, name) for name in (checkpoint.name + "/", LATEST, IDENTITY))
            stale = [k for k in self._keys(self._key(fingerprint) + "/") if not k.startswith(keep)]
            for i in range(0, len(stale), 1000):
                objects = [{"Key": k} for k in stale[i : i + 1000]]
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
        except Exception as err:  # best effort: training must not die of a mirror
            self._warn(f"upload of {checkpoint.name}", err)

    def _keys(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in self._objects(prefix)]

    def restore(self, folder: Path) -> bool:
        """Download the run's mirrored newest checkpoint into `folder` (`models/checkpoints/<run>`).

        The bucket is untrusted: a LATEST that is not a checkpoint name, or an object that is not a
        plain file of that checkpoint, is refused before anything is written, so nothing it names
        can land outside `folder`."""
        from botocore.exceptions import ClientError

        fingerprint = folder.name
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._key(fingerprint, LATEST))["Body"]
            latest = body.read(MAX_LATEST_BYTES).decode()
            if not is_checkpoint_name(latest):
                raise RefusedObject(f"{LATEST} names {latest[:80]!r}, not a checkpoint of this run")
            prefix = self._key(fingerprint, latest) + "/"
            files = {key: file_name(key, prefix) for key in self._keys(prefix)}
            if not files:
                raise RefusedObject(f"{LATEST} names {latest}, which holds no files")
            with atomic_dir(folder / latest) as tmp:
                for key, name in files.items():
                    self._s3.download_file(self.bucket, key, str(tmp / name))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                why = self._why_none()
                log.info(f"train: no checkpoint of this run in {redact(self.url)}: {why}; training starts at step 0")
                return False
            self._warn("restore", err, "the bucket is unreachable")
            return False
        except RefusedObject as err:
            self._warn("restore", err)
            return False
        except Exception as err:  # botocore's connection errors, a timeout
            self._warn("restore", err, "the bucket is unreachable")
            return False
        log.info(f"train: restored checkpoint {latest} of this run from {redact(self.url)}")
        return True

    def _why_none(self) -> str:
        """Why the bucket holds no checkpoint of this run: nothing mirrored yet, or only other runs' (naming the
        library versions that differ from the newest one's, which a new release between two machines changes)."""
        try:
            latest = [o for o in self._objects(self._key("") + "/") if o["Key"].endswith("/" + LATEST)]
        except Exception as err:
            return f"its listing failed ({(str(err).splitlines() or [type(err).__name__])[0][:200]})"
        if not latest:
            return "nothing is mirrored there yet"
        newest = max(latest, key=lambda o: o["LastModified"])["Key"].removesuffix("/" + LATEST)
        try:
            theirs = json.loads(self._s3.get_object(Bucket=self.bucket, Key=f"{newest}/{IDENTITY}")["Body"].read(4096))
            theirs = theirs.get("versions") or {}
        except Exception:  # a run mirrored before IDENTITY was
            theirs = {}
        changed = [
            f"{name} {theirs.get(name) or 'none'} there, {version or 'none'} here"
            for name, version in self.identity.get("versions", {}).items()
            if name in theirs and theirs[name] != version
        ]
        others = f"it holds {len(latest)} other run(s)"
        if changed:
            return f"{others}; the newest was trained with other library versions ({', '.join(changed)})"
        return f"{others} (other code, data, base model, train/lora/quant params or library versions)"

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj for page in pages for obj in page.get("Contents", [])]

    def _warn(self, what: str, err: Exception, meaning: str = "") -> None:
        if not self._warned:
            # Redacted before it is cut: a cut could leave a URL's user:pass without the @ that marks it.
            reason = (redact(str(err)).splitlines() or [type(err).__name__])[0][:200]
            said = f"{meaning}: " if meaning else ""
            start = "; nothing restored, this run starts at step 0" if what == "restore" else ""
            where = redact(self.url)
            log.warning(f"warning: checkpoint mirror {where}: {what} failed ({said}{reason}){start}; training goes on")
            self._warned = True
