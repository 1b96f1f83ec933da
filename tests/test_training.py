"""Training on the CPU with the real QLoRA path (bitsandbytes nf4) on a tiny random Llama."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from lorapipe.checkpoints import TrainState, list_checkpoints, resume_checkpoint, save_checkpoint
from lorapipe.training import lr_factor, micro_batch_rows, total_steps
from tests.workspace import (
    data_workspace,
    stage,
    start_training,
    train_args,
    train_losses,
    wait_until,
    write_params,
)

TRAIN = {
    "max_steps": 30,
    "micro_batch": 2,
    "grad_accum": 2,
    "lr": 0.002,
    "eval_every": 10,
    "grad_checkpointing": False,
}
OPS = {"save_every": 10, "keep_checkpoints": 2}
# The module workspace's params; a test that changes them puts these back in `finally`.
PARAMS = {
    "data": {"url": "data/trn.json.gz"},
    "sample": {"size": 300},
    "tokenize": {"seq_len": 256},
    "train": TRAIN,
    "ops": OPS,
}
TRAIN_ARGS = train_args()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir) -> Path:
    return data_workspace(tmp_path_factory.mktemp("train"), tiny_model_dir, **PARAMS)


def saved(root: Path, step: int | None = None) -> list[Path]:
    """Checkpoints under `root` (one folder per run), newest first; or only those of `step`."""
    found = [c for run in root.glob("*") if run.is_dir() for c in list_checkpoints(run)]
    found.sort(key=lambda c: c.name, reverse=True)
    return [c for c in found if step is None or c.name == f"step-{step:06d}"]


def reference_losses(ws: Path) -> list[float]:
    """Losses of an uninterrupted run with the module's params (trained once, in ws/metrics)."""
    if not (ws / "metrics/train_log.csv").exists():
        stage(ws, "train.py", *TRAIN_ARGS)
    return train_losses(ws / "metrics")


def test_train_stage_writes_adapter_metrics_and_plots(workspace):
    stage(workspace, "train.py", *TRAIN_ARGS)
    metrics = json.loads((workspace / "metrics/train.json").read_text())
    assert metrics["steps"] == 30
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["val_loss"] < 10.9  # below the ~ln(49152) of a random model
    log = train_losses(workspace / "metrics")
    assert len(log) == 30 and log[-1] < log[0]
    adapter = workspace / "models/adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()
    assert not list(adapter.glob("*.bin"))
    assert (workspace / "metrics/loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in saved(workspace / "models/checkpoints")] == ["step-000030", "step-000020"]


def test_every_lora_weight_changed_and_adapter_reloads_and_generates(workspace, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (workspace / "models/adapter").is_dir():
        stage(workspace, "train.py", *TRAIN_ARGS)
    weights = load_file(workspace / "models/adapter/adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, workspace / "models/adapter").merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(workspace / "models/adapter")
    ids = tokenizer("Acme Mug", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_merged_tuned_model_matches_the_training_time_model(workspace):
    """Evaluation's merged model computes what the nf4 base + adapter computed in training."""
    from peft import PeftModel

    from lorapipe.modeling import load_model, load_tuned_model
    from lorapipe.params import QuantParams

    if not (workspace / "models/adapter").is_dir():
        stage(workspace, "train.py", *TRAIN_ARGS)
    cpu, base = torch.device("cpu"), workspace / "models/base"
    trained = PeftModel.from_pretrained(
        load_model(base, torch.float32, cpu, QuantParams()), workspace / "models/adapter"
    )
    merged = load_tuned_model(base, workspace / "models/adapter", QuantParams(), torch.float32, cpu)
    unquantized = PeftModel.from_pretrained(load_model(base, torch.float32, cpu), workspace / "models/adapter")
    ids = torch.tensor([[1, 500, 600, 700, 800, 900, 2]])
    with torch.no_grad():
        expected = trained.eval()(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=5e-3, rtol=0)
        # Merging into the original (unquantized) weights instead would be far off.
        assert (unquantized.merge_and_unload()(ids).logits - expected).abs().max() > 0.05


def test_same_seed_same_losses(workspace, tmp_path):
    first = reference_losses(workspace)
    stage(workspace, "train.py", *train_args(tmp_path / "metrics"), "--checkpoints", str(tmp_path / "fresh"))
    assert train_losses(tmp_path / "metrics") == first


def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(workspace, tmp_path):
    reference = reference_losses(workspace)
    ckpts, metrics = tmp_path / "ckpts", tmp_path / "metrics"
    proc = start_training(workspace, metrics, ckpts)
    wait_until(proc, lambda: saved(ckpts, 10))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (metrics / "train.json").exists()
    resumed = stage(workspace, "train.py", *train_args(metrics), "--checkpoints", str(ckpts))
    assert "resuming from" in resumed.stderr
    assert json.loads((metrics / "train.json").read_text())["steps"] == 30
    after = train_losses(metrics)
    # Equal up to float reassociation in multithreaded CPU kernels; a lost step, a restarted
    # schedule or a replayed batch would differ by orders of magnitude more.
    assert after == pytest.approx(reference, rel=1e-4)


def test_sigterm_saves_the_step_it_stopped_at_and_the_rerun_ends_like_an_uninterrupted_one(workspace, tmp_path):
    reference = reference_losses(workspace)
    ckpts, metrics = tmp_path / "ckpts", tmp_path / "m"
    proc = start_training(workspace, metrics, ckpts)
    wait_until(proc, lambda: saved(ckpts, 10))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    stopped_at = int(re.search(r"error: stopped on request at step (\d+) of 30", err).group(1))
    # Saved where it stopped, not only at the last save_every multiple.
    assert 10 < stopped_at < 30 and saved(ckpts)[0].name == f"step-{stopped_at:06d}"
    assert not (metrics / "train.json").exists()
    resumed = stage(workspace, "train.py", *train_args(metrics), "--checkpoints", str(ckpts))
    assert f"(step {stopped_at})" in resumed.stderr
    assert train_losses(metrics) == pytest.approx(reference, rel=1e-3)


def test_a_stop_requested_mid_step_saves_that_step(workspace, tiny_model_dir, tmp_path):
    """A stop asked for during step 3's validation is taken at the end of the next step, which is saved."""
    from transformers import AutoModelForCausalLM

    from lorapipe.modeling import add_lora
    from lorapipe.packing import read_rows
    from lorapipe.params import LoraParams, OpsParams, TrainParams
    from lorapipe.training import GracefulStop, Stopped, train

    rows = read_rows(workspace / "data/tokenized/train.parquet")
    params = TrainParams(**{**TRAIN, "max_steps": 6, "eval_every": 3})
    ops = OpsParams(save_every=100)
    stop = GracefulStop()

    def request_stop_at_step_3(row: dict) -> None:  # on_step runs right after step 3's validation
        if row["step"] == 3:
            stop.requested = "SIGTERM"

    def fresh_model():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return add_lora(model, LoraParams(r=2), False, quantized=False)

    cpu = torch.device("cpu")
    common = {"pad_id": 0, "device": cpu, "dtype": torch.float32, "checkpoints": tmp_path, "fingerprint": "f"}
    with pytest.raises(Stopped, match="step 4 of 6"):
        train(fresh_model(), rows, rows[:2], params, ops, **common, on_step=request_stop_at_step_3, stop=stop)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004"]
    state = train(fresh_model(), rows, rows[:2], params, ops, **common)
    assert state.step == 6 and [v["step"] for v in state.val_history] == [3, 6]


def test_changed_params_do_not_resume_a_foreign_checkpoint(workspace):
    if not saved(workspace / "models/checkpoints", 30):
        stage(workspace, "train.py", *TRAIN_ARGS)
    write_params(
        workspace,
        data={"url": "data/trn.json.gz"},
        sample={"size": 300},
        tokenize={"seq_len": 256},
        train={**TRAIN, "max_steps": 2},
        ops={"save_every": 1},
        lora={"r": 4},
    )
    try:
        result = stage(workspace, "train.py", *TRAIN_ARGS)
    finally:
        write_params(workspace, **PARAMS)
    assert "resuming from" not in result.stderr  # its own, empty folder: a fresh start
    assert json.loads((workspace / "metrics/train.json").read_text())["steps"] == 2


def test_corrupt_newest_checkpoint_falls_back_to_previous(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lorapipe.modeling import add_lora
    from lorapipe.params import LoraParams

    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraParams(r=2), False, quantized=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (1, 2):
        save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=step, fingerprint="f"), keep=2)
    newest = tmp_path / "step-000002/adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # torn write
    state = resume_checkpoint(tmp_path, model, optimizer, scheduler, fingerprint="f")
    assert state is not None and state.step == 1


def test_schedule_and_batches_are_pure_functions_of_the_step():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(1 / 11)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert micro_batch_rows(7, 2, 3, 10, seed=1) == micro_batch_rows(7, 2, 3, 10, seed=1)
    epoch0 = [i for s in range(2) for b in micro_batch_rows(s, 2, 3, 10, seed=1) for i in b]
    assert sorted(epoch0[:10]) == list(range(10))  # an epoch visits every row once


def test_total_steps_from_epochs_or_max_steps():
    from lorapipe.params import TrainParams

    assert total_steps(100, TrainParams(epochs=1, micro_batch=4, grad_accum=5)) == 5
    assert total_steps(100, TrainParams(epochs=2.5, micro_batch=4, grad_accum=5)) == 13
    assert total_steps(100, TrainParams(max_steps=7)) == 7


def test_a_second_experiment_resumes_its_own_checkpoint_and_keeps_the_first_runs(workspace, tmp_path):
    """Finished run A (r=16); run B (r=4) SIGKILLed after its first checkpoint, then rerun with
    only an operational setting changed: B resumes its own checkpoint, ends like an uninterrupted
    B, and A's checkpoints are untouched."""
    ckpts = tmp_path / "ckpts"

    def use(lora_r: int, **ops: int) -> None:
        write_params(workspace, train={**TRAIN, "max_steps": 12}, lora={"r": lora_r}, ops={"save_every": 4, **ops})

    def run(metrics: str, checkpoints: Path = ckpts) -> subprocess.CompletedProcess:
        return stage(workspace, "train.py", *train_args(tmp_path / metrics), "--checkpoints", str(checkpoints))

    try:
        use(lora_r=16)
        run("a")
        first_run = {c.parent.name: c.name for c in saved(ckpts)}
        use(lora_r=4)
        run("b-reference", tmp_path / "reference-ckpts")
        proc = start_training(workspace, tmp_path / "b", ckpts)
        wait_until(proc, lambda: [c for c in saved(ckpts, 4) if c.parent.name not in first_run])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        use(lora_r=4, log_every=3)  # operational: not part of the run's identity
        resumed = run("b")
    finally:
        write_params(workspace, **PARAMS)
    assert "(step 4)" in resumed.stderr and "resuming from" in resumed.stderr
    assert train_losses(tmp_path / "b") == pytest.approx(train_losses(tmp_path / "b-reference"), rel=1e-3)
    assert {c.parent.name: c.name for c in saved(ckpts) if c.parent.name in first_run} == first_run
