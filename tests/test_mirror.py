"""Checkpoints that outlive the machine: mirrored to a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import re

import boto3
import pytest

from lorapipe.train.mirror import CheckpointMirror
from tests.workspace import (
    S3_KEY_ID,
    S3_SECRET,
    free_port,
    tree_state,
)


def bucket_holding(endpoint: str, prefix: str, objects: dict[str, bytes]) -> CheckpointMirror:
    """A mirror at s3://dvc/<prefix> whose bucket holds `objects` (keys under the prefix's checkpoints/)."""
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    for key, body in objects.items():
        s3.put_object(Bucket="dvc", Key=f"{prefix}/checkpoints/{key}", Body=body)
    return CheckpointMirror(
        f"s3://dvc/{prefix}", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET
    )


# What a hostile bucket's LATEST names, and the checkpoint files it holds, for run `run1` whose folder is
# <tmp>/models/checkpoints/run1: each would replace <tmp>/outside, or read another run's objects.
HOSTILE = {
    "absolute-path": lambda outside: (str(outside), [f"{outside}/evil.txt"]),
    "dot-dot": lambda outside: ("../../../outside", ["../../../outside/evil.txt"]),
    "dot-dot-after-a-step": lambda outside: (
        "step-000010/../../../../outside",
        ["step-000010/../../../../outside/evil.txt"],
    ),
    "key-outside-the-prefix": lambda outside: (
        "step-000010",
        ["step-000010/adapter_model.safetensors", "step-000010/../../run2/step-000010/adapter_model.safetensors"],
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_bucket_cannot_write_outside_the_run_folder(tmp_path, s3_endpoint, caplog, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("sentinel")
    before = tree_state(outside)
    latest, files = HOSTILE[case](outside)
    objects = {"run1/LATEST": latest.encode(), **{f"run1/{name}": b"evil" for name in files}}
    mirror = bucket_holding(s3_endpoint, tmp_path.name, objects)
    folder = tmp_path / "models/checkpoints/run1"
    folder.mkdir(parents=True)

    assert mirror.restore(folder) is False
    assert tree_state(outside) == before
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "outside"]
    refused = [r.message for r in caplog.records if "checkpoint mirror" in r.message]
    assert len(refused) == 1 and "restore failed" in refused[0] and "training goes on" in refused[0], refused


def test_a_checkpoint_the_mirror_uploaded_is_restored_byte_for_byte(tuned_workspace, tmp_path, s3_endpoint):
    """What a new VM resumes from (tests/test_cloud.py): the run's newest checkpoint, every file as training saved
    it, in the run's folder there, so it resumes as a local checkpoint does (test_training's killed run)."""
    from lorapipe.train.checkpoints import list_checkpoints

    (run,) = [p for p in (tuned_workspace / "models/checkpoints").iterdir() if p.is_dir()]
    newest = list_checkpoints(run)[0]
    mirror = bucket_holding(s3_endpoint, tmp_path.name, {})
    mirror.upload(newest)
    mirror.wait()
    folder = tmp_path / "new-vm" / run.name
    assert bucket_holding(s3_endpoint, tmp_path.name, {}).restore(folder) is True  # a new machine's mirror
    restored = {p.name: p.read_bytes() for p in (folder / newest.name).iterdir()}
    assert restored == {p.name: p.read_bytes() for p in newest.iterdir()} and len(restored) > 2


def test_credentials_in_the_mirror_url_are_refused_in_one_line_and_never_printed(tmp_path, caplog):
    """ops.checkpoint_mirror is pushed with the results (settings.yaml): a URL with credentials is refused naming
    the file and the key. A mirror handed one anyway (a DVC remote's URL) prints it nowhere."""
    from lorapipe.core.cli import UserError
    from lorapipe.core.params import OpsParams
    from tests.workspace import params_of

    secret = "Secret" * 4  # built at run time
    for url, part in (
        (f"s3://AKEY:{secret}@host/bucket", "user:password@"),
        (f"s3://b/p?X-Amz-Signature={secret}", "?"),
    ):
        said = rf"settings\.yaml: ops\.checkpoint_mirror holds credentials \({re.escape(part)}"
        with pytest.raises(UserError, match=said) as err:
            params_of(OpsParams, checkpoint_mirror=url)
        assert secret not in str(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value)

    def mirror() -> CheckpointMirror:  # down: each warns once
        return CheckpointMirror(f"s3://AKEY:{secret}@bucket/prefix", endpoint_url=f"http://127.0.0.1:{free_port()}")

    checkpoint = tmp_path / "run/step-000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
    uploading = mirror()
    uploading.upload(checkpoint)
    uploading.wait()
    assert not mirror().restore(tmp_path / "run")
    assert caplog.text.count("checkpoint mirror s3://bucket/prefix:") == 2 and secret not in caplog.text


def test_a_restore_that_finds_nothing_says_why_in_one_line(tmp_path, s3_endpoint, caplog):
    """Nothing mirrored yet; only other runs (a library release between two machines of one job changed
    the run's identity: the versions that differ are named); the bucket unreachable. Each: one line, no restore."""
    import json

    ours = {"versions": {"torch": "2.11.0", "transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": ""}}
    theirs = {"versions": {**ours["versions"], "transformers": "5.23.0"}}
    other_run = {"run2/LATEST": b"step-000010", "run2/IDENTITY.json": json.dumps(theirs).encode()}
    unreachable = CheckpointMirror("s3://dvc/x", ours, endpoint_url=f"http://127.0.0.1:{free_port()}")
    cases = {
        "nothing is mirrored there yet": bucket_holding(s3_endpoint, f"{tmp_path.name}-empty", {}),
        "it holds 1 other run(s); the newest was trained with other library versions (transformers 5.23.0 there, "
        "5.24.0 here)": bucket_holding(s3_endpoint, f"{tmp_path.name}-other", other_run),
        "restore failed (the bucket is unreachable: ": unreachable,
    }
    caplog.set_level("INFO", logger="lorapipe")
    for why, mirror in cases.items():
        mirror.identity = ours
        caplog.clear()
        folder = tmp_path / why[:8] / "run1"
        folder.mkdir(parents=True)
        assert mirror.restore(folder) is False and list(folder.iterdir()) == []
        [said] = [r.message for r in caplog.records if "mirror" in r.message or "checkpoint of this run" in r.message]
        assert why in said and "\n" not in said and "step 0" in said, said
