"""Training on the CPU with the real QLoRA path (bitsandbytes nf4) on a tiny random Llama.

`tuned_workspace` is the train stage's one uninterrupted run, read-only; a test that trains again does it
in its own copy (`tuned_copy`) and compares with that run's log.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lorapipe.data.packing import read_rows
from lorapipe.train.checkpoints import TrainState, list_checkpoints, resume_checkpoint, save_checkpoint
from lorapipe.train.training import lr_factor, micro_batch_rows, total_steps
from tests.workspace import (
    LOGIT_PROBE,
    ROOT,
    SECRETS,
    TRACKED,
    TUNED,
    child_env,
    params_of,
    printed_and_written,
    stage,
    stage_args,
    start_training,
    train_losses,
    tree_state,
    update_params,
    wait_for,
    write_params,
)

TRAIN = TUNED["train"]
TRAIN_ARGS = stage_args("train")  # as tuned_workspace trained
IDS = torch.tensor(LOGIT_PROBE)


def saved(root: Path, step: int | None = None) -> list[Path]:
    """Checkpoints under `root` (one folder per run), newest first; or only those of `step`."""
    found = [c for run in root.glob("*") if run.is_dir() for c in list_checkpoints(run)]
    found.sort(key=lambda c: c.name, reverse=True)
    return [c for c in found if step is None or c.name == f"step-{step:06d}"]


def test_train_stage_writes_adapter_metrics_and_plots(tuned_workspace):
    ws = tuned_workspace
    metrics = json.loads((ws / "metrics/train_details.json").read_text())
    assert metrics["steps"] == 30
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["val_loss"] < 10.9  # below the ~ln(49152) of a random model
    log = train_losses(ws / "metrics")
    assert len(log) == 30 and log[-1] < log[0]
    adapter = ws / "models/trained"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()
    assert not list(adapter.glob("*.bin"))
    assert (ws / "metrics/loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in saved(ws / "models/checkpoints")] == ["step-000030", "step-000020"]


def test_every_lora_weight_changed_and_adapter_reloads_and_generates(tuned_workspace, tmp_path):
    """The stage's adapter moved every lora_B off zero; an adapter saved as the stage saves it reloads onto
    a fresh base into the very model that was trained (same logits, same greedy text), not the base."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from lorapipe.core.params import LoraParams, OpsParams, TrainParams
    from lorapipe.model.modeling import add_lora, load_model, load_tokenizer
    from lorapipe.train.training import TrainConfig, TrainData, train

    ws = tuned_workspace
    weights = load_file(ws / "models/trained/adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero

    # Train in process as train.py does, save as it saves, reload onto a fresh base. Unquantized: on the CPU
    # bitsandbytes repacks nf4 weights on eval and on save, which moves logits by ~2e-3 with the model's
    # history (test_merged_tuned_model_matches_the_training_time_model covers nf4, with a tolerance).
    cpu, base = torch.device("cpu"), ws / "models/base"
    rows = read_rows(ws / "data/tokenized/train.parquet")
    torch.manual_seed(0)
    trained = add_lora(load_model(base, torch.float32, cpu), params_of(LoraParams), False, quantized=False)
    params = params_of(TrainParams, **{**TRAIN, "max_steps": 4, "lr": 0.01, "eval_every": 100})
    ops = params_of(OpsParams, save_every=100)
    config = TrainConfig(params, ops, cpu, torch.float32, tmp_path / "ckpts", fingerprint="f")
    train(trained, TrainData(rows, rows[:2], pad_id=0), config)
    tokenizer = load_tokenizer(base)
    prompt = tokenizer(["Acme Stainless Steel Travel Mug"], return_tensors="pt")
    greedy = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        expected, generated = trained.eval()(IDS).logits, trained.generate(**prompt, **greedy)[0].tolist()
    trained.save_pretrained(tmp_path / "adapter", safe_serialization=True)

    reloaded = PeftModel.from_pretrained(load_model(base, torch.float32, cpu), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, expected, atol=1e-6, rtol=0)
        untuned = load_model(base, torch.float32, cpu).eval()(IDS).logits
        assert (untuned - expected).abs().max() > 0.05  # the comparison can tell them apart
        again = [reloaded.generate(**prompt, **greedy)[0].tolist() for _ in range(2)]
    assert again == [generated, generated] and len(generated) > prompt["input_ids"].shape[1]


def test_merged_tuned_model_matches_the_training_time_model(tuned_workspace):
    """Evaluation's merged model computes what the nf4 base + adapter computed in training."""
    from peft import PeftModel

    from lorapipe.core.params import QuantParams
    from lorapipe.model.modeling import load_model, load_tuned_model

    cpu, base, adapter = torch.device("cpu"), tuned_workspace / "models/base", tuned_workspace / "models/trained"
    trained = PeftModel.from_pretrained(load_model(base, torch.float32, cpu, params_of(QuantParams)), adapter)
    merged = load_tuned_model(base, adapter, "lora", params_of(QuantParams), torch.float32, cpu)
    unquantized = PeftModel.from_pretrained(load_model(base, torch.float32, cpu), adapter)
    with torch.no_grad():
        expected, tolerance = trained.eval()(IDS).logits, 5e-3
        torch.testing.assert_close(merged(IDS).logits, expected, atol=tolerance, rtol=0)
        # Merging into the original (unquantized) weights instead would be far off: many times the tolerance.
        assert (unquantized.merge_and_unload()(IDS).logits - expected).abs().max() > 5 * tolerance


def test_a_sigterm_then_a_sigkill_each_resume_to_the_uninterrupted_runs_losses_in_one_mlflow_run(
    tuned_workspace, tuned_copy, tmp_path
):
    """tuned_workspace's run again, in three processes: the first SIGTERMed after step 10's checkpoint (it saves
    the step it stopped at), the second SIGKILLed after step 20's, the third resumes to the end. The losses, the
    tokens and the MLflow run are those of one uninterrupted run."""
    from mlflow.tracking import MlflowClient

    reference, workspace = train_losses(tuned_workspace / "metrics"), tuned_copy
    ckpts, metrics = tmp_path / "ckpts", tmp_path / "m"
    update_params(workspace, TRACKED)  # ops are no part of the run: still tuned's run
    store = f"sqlite:///{workspace}/mlflow.db"
    proc = start_training(workspace, metrics, ckpts, MLFLOW_TRACKING_URI=store)
    wait_for(lambda: saved(ckpts, 10), timeout=300, proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    stopped_at = int(re.search(r"error: stopped on request at step (\d+) of 30", err).group(1))
    # Saved where it stopped, not only at the last save_every multiple.
    assert 10 < stopped_at < 20 and saved(ckpts)[0].name == f"step-{stopped_at:06d}"

    proc = start_training(workspace, metrics, ckpts, MLFLOW_TRACKING_URI=store)
    wait_for(lambda: saved(ckpts, 20), timeout=300, proc=proc)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert f"(step {stopped_at})" in err and not (metrics / "train_details.json").exists()

    resumed = stage(
        workspace,
        "train.py",
        *stage_args("train", str(metrics)),
        "--checkpoints",
        str(ckpts),
        env={"MLFLOW_TRACKING_URI": store},
    )
    assert "(step 20)" in resumed.stderr
    summary = json.loads((metrics / "train_details.json").read_text())
    assert summary["steps"] == 30 and len(summary["sessions"]) == 3  # its time and memory cover each process
    assert summary["tokens"] == json.loads((tuned_workspace / "metrics/train_details.json").read_text())["tokens"]
    # Equal up to float reassociation in multithreaded CPU kernels; a lost step, a restarted
    # schedule or a replayed batch would differ by orders of magnitude more.
    assert train_losses(metrics) == pytest.approx(reference, rel=1e-4)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lorapipe").experiment_id])
    assert run.info.status == "FINISHED"  # one run across the three processes
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 31))


def test_a_stop_requested_mid_step_saves_that_step(tuned_workspace, tiny_model_dir, tmp_path):
    """A stop asked for during step 3's validation is taken at the end of the next step, which is saved."""
    from transformers import AutoModelForCausalLM

    from lorapipe.core.params import LoraParams, OpsParams, TrainParams
    from lorapipe.model.modeling import add_lora
    from lorapipe.train.training import GracefulStop, Hooks, Stopped, TrainConfig, TrainData, train

    rows = read_rows(tuned_workspace / "data/tokenized/train.parquet")
    params = params_of(TrainParams, **{**TRAIN, "max_steps": 6, "eval_every": 3})
    ops = params_of(OpsParams, save_every=100)
    stop = GracefulStop()

    def request_stop_at_step_3(row: dict) -> None:  # on_step runs right after step 3's validation
        if row["step"] == 3:
            stop.requested = "SIGTERM"

    def fresh_model():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return add_lora(model, params_of(LoraParams, r=2), False, quantized=False)

    data = TrainData(rows, rows[:2], pad_id=0)
    config = TrainConfig(params, ops, torch.device("cpu"), torch.float32, checkpoints=tmp_path, fingerprint="f")
    with pytest.raises(Stopped, match="step 4 of 6"):
        train(fresh_model(), data, config, Hooks(on_step=request_stop_at_step_3, stop=stop))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004"]
    state = train(fresh_model(), data, config)
    assert state.step == 6 and [v["step"] for v in state.val_history] == [3, 6]


def test_a_step_out_of_memory_ends_in_one_line_naming_what_to_lower(tmp_path):
    """An allocator that gives out mid-step (CUDA's OutOfMemoryError, the CPU's RuntimeError) becomes a
    UserError saying which params to lower, not a traceback; any other error is left alone."""
    from lorapipe.core.cli import UserError
    from lorapipe.core.params import OpsParams, TrainParams
    from lorapipe.data.packing import PackedRow
    from lorapipe.train.training import TrainConfig, TrainData, train

    class Failing(torch.nn.Module):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.weight, self.error = torch.nn.Parameter(torch.ones(1)), error

        def forward(self, **_: object) -> None:
            raise self.error

    rows = [PackedRow([1, 5, 6, 2], [-100, 5, 6, 2], [0, 1, 2, 3])] * 4
    data = TrainData(rows, [], pad_id=0)
    params, ops = params_of(TrainParams, max_steps=1, micro_batch=4), params_of(OpsParams)
    config = TrainConfig(params, ops, torch.device("cpu"), torch.float32, tmp_path, "f")
    for error in (
        torch.OutOfMemoryError("CUDA out of memory"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory"),
    ):
        with pytest.raises(UserError, match=r"out of memory on cpu with train.micro_batch=4 rows of 4 tokens: lower"):
            train(Failing(error), data, config)
    with pytest.raises(ValueError, match="a bug"):
        train(Failing(ValueError("a bug")), data, config)


def test_corrupt_newest_checkpoint_falls_back_to_previous(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lorapipe.core.params import LoraParams
    from lorapipe.model.modeling import add_lora

    model = add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), params_of(LoraParams, r=2), False, quantized=False
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (1, 2):
        save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=step, fingerprint="f"), keep=2)
    newest = tmp_path / "step-000002/adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # torn write
    state = resume_checkpoint(tmp_path, model, optimizer, scheduler, fingerprint="f", total_steps=3)
    assert state is not None and state.step == 1


def test_a_foreign_newest_checkpoint_falls_back_to_the_runs_own(tiny_model_dir, tmp_path):
    """Another run's checkpoint (a stray copy, a mirror's) newest in the folder: skipped, not a fresh start."""
    from transformers import AutoModelForCausalLM

    from lorapipe.core.params import LoraParams
    from lorapipe.model.modeling import add_lora

    model = add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), params_of(LoraParams, r=2), False, quantized=False
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step, run in ((1, "f"), (2, "another")):
        save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=step, fingerprint=run), keep=2)
    state = resume_checkpoint(tmp_path, model, optimizer, scheduler, fingerprint="f", total_steps=3)
    assert state is not None and state.step == 1


def test_resume_after_validation_on_the_save_step_trains_the_same_numbers(tuned_workspace, tmp_path):
    """The demo's cadence (validation and a save at step 6 of 12) on nf4: a run stopped at step 6 and
    resumed trains exactly the losses of an uninterrupted one. bitsandbytes' CPU kernel would repack the
    4-bit weights at the first validation and round their scales at the save, so only the uninterrupted
    run would go on with rounded weights."""
    from lorapipe.core.params import LoraParams, OpsParams, QuantParams, TrainParams
    from lorapipe.model.modeling import add_lora, load_model
    from lorapipe.train.training import GracefulStop, Hooks, Stopped, TrainConfig, TrainData, train

    rows = read_rows(tuned_workspace / "data/tokenized/train.parquet")
    params = params_of(TrainParams, **{**TRAIN, "max_steps": 12, "eval_every": 6})
    ops, cpu = params_of(OpsParams, save_every=6), torch.device("cpu")

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(params.seed)
        model = load_model(tuned_workspace / "models/base", torch.float32, cpu, params_of(QuantParams))
        return add_lora(model, params_of(LoraParams), False, quantized=True)

    def config(checkpoints: Path) -> TrainConfig:
        return TrainConfig(params, ops, cpu, torch.float32, checkpoints, fingerprint="f")

    data = TrainData(rows, rows[:4], pad_id=0)
    uninterrupted = train(fresh_model(), data, config(tmp_path / "a"))
    stop = GracefulStop()

    def stop_at_step_6(row: dict) -> None:  # asked during step 5, taken (validated and saved) at the end of step 6
        if row["step"] == 5:
            stop.requested = "SIGTERM"

    with pytest.raises(Stopped, match="step 6 of 12"):
        train(fresh_model(), data, config(tmp_path / "b"), Hooks(on_step=stop_at_step_6, stop=stop))
    resumed = train(fresh_model(), data, config(tmp_path / "b"))
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]
    assert resumed.val_history == uninterrupted.val_history and len(resumed.sessions) == 2


def test_a_killed_fp16_run_resumes_with_its_gradient_scaler_to_the_uninterrupted_runs_losses_and_weights(
    tuned_workspace, tiny_model_dir, tmp_path
):
    """fp16 on the CPU (torch's CPU gradient scaler) stopped after its step-3 save and resumed: the same losses
    and adapter as an uninterrupted run. The tiny Llama's embeddings are scaled up so that its first backward
    passes overflow fp16 at the scaler's initial 65,536, as a T4 run's first steps often do: the scaler has
    backed off by the save, and a resume that restarted at 65,536 would skip other steps."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lorapipe.core.params import LoraParams, OpsParams, TrainParams
    from lorapipe.model.modeling import add_lora
    from lorapipe.train.checkpoints import OPTIMIZER_FILE, resumable_state
    from lorapipe.train.training import GracefulStop, Hooks, Stopped, TrainConfig, TrainData, train

    rows = read_rows(tuned_workspace / "data/tokenized/train.parquet")
    params = params_of(TrainParams, **{**TRAIN, "max_steps": 6, "grad_accum": 1, "lr": 0.002, "eval_every": 100})
    ops, cpu = params_of(OpsParams, save_every=3), torch.device("cpu")

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(params.seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(30_000)
        return add_lora(model, params_of(LoraParams, r=4), False, quantized=False)

    def run(folder: str, hooks: Hooks | None = None):
        config = TrainConfig(params, ops, cpu, torch.float16, tmp_path / folder, fingerprint="f")
        return train(fresh_model(), TrainData(rows, [], pad_id=0), config, hooks or Hooks())

    uninterrupted = run("a")
    stop = GracefulStop()

    def stop_at_step_3(row: dict) -> None:  # asked during step 2, taken (and saved) at the end of step 3
        if row["step"] == 2:
            stop.requested = "SIGTERM"

    with pytest.raises(Stopped, match="step 3 of 6"):
        run("b", Hooks(on_step=stop_at_step_3, stop=stop))
    (saved_at_3,) = list_checkpoints(tmp_path / "b")
    scaler_state = torch.load(saved_at_3 / OPTIMIZER_FILE, weights_only=True)["scaler"]
    assert scaler_state["scale"] < 65536  # it backed off: a fresh scaler would not be the same
    assert resumable_state(tmp_path / "b", "f", total_steps=6).dtype == "fp16"  # what the stage resumes in
    resumed = run("b")
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]
    adapters = [load_file(list_checkpoints(tmp_path / run)[0] / "adapter_model.safetensors") for run in "ab"]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][name], adapters[1][name]) for name in adapters[0])
    session = {"device": "cpu", "dtype": "fp16", "threads": torch.get_num_threads(), "processes": 1}
    # The training record's sessions: who trained which steps, at what speed.
    assert [{k: s[k] for k in session} for s in resumed.sessions] == [session, session]
    assert [s["steps"] for s in resumed.sessions] == [3, 3] and all(s["seconds"] > 0 for s in resumed.sessions)
    assert sum(s["tokens"] for s in resumed.sessions) == uninterrupted.tokens


def interrupted_after_step_20(workspace: Path) -> Path:
    """tuned_workspace's run as if killed after its step-20 checkpoint: its last checkpoint removed."""
    (last,) = saved(workspace / "models/checkpoints", 30)
    shutil.rmtree(last)
    assert saved(workspace / "models/checkpoints", 20)
    return last.parent


def test_edited_training_code_never_resumes_the_old_codes_checkpoint(tuned_workspace, tuned_copy, tmp_path):
    """The stage's code is part of the run's identity: with the schedule edited to a zero learning rate,
    the rerun trains from scratch (lora_B stays zero) instead of resuming at step 20 and returning
    an adapter of the old code."""
    from safetensors.torch import load_file

    code = tmp_path / "code"
    for package in ("stages", "lorapipe"):
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", code)  # the paths block the code reads (lorapipe.core.artifacts)
    training = code / "lorapipe/train/training.py"
    source = training.read_text()
    edited = source.replace(
        '    """Linear warmup, then cosine or linear decay to zero (or constant)."""\n',
        '    """Zero."""\n    return 0.0\n',
    )
    assert edited != source
    training.write_text(edited)
    interrupted_after_step_20(tuned_copy)
    result = subprocess.run(
        [sys.executable, str(code / "stages/train.py"), *TRAIN_ARGS],
        cwd=tuned_copy,
        capture_output=True,
        text=True,
        env=child_env(PYTHONPATH=str(code)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" not in result.stderr
    weights = load_file(tuned_copy / "models/trained/adapter_model.safetensors")
    assert all(not v.any() for k, v in weights.items() if "lora_B" in k)  # lr 0 from the first step
    before = load_file(tuned_workspace / "models/trained/adapter_model.safetensors")
    assert any(v.any() for k, v in before.items() if "lora_B" in k)


def test_a_new_base_weight_file_never_resumes_the_old_bases_checkpoint(tuned_workspace, tuned_copy):
    """Other base weights under the same config.json (another revision, a re-converted GGUF): a fresh run,
    whose adapter differs, not the step-20 checkpoint trained on the old weights."""
    from safetensors.torch import load_file, save_file

    (weights_file,) = (tuned_copy / "models/base").glob("*.safetensors")
    config = (tuned_copy / "models/base/config.json").read_bytes()
    weights = load_file(weights_file)
    torch.manual_seed(1)
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in weights.items()}, weights_file, metadata={"format": "pt"})
    interrupted_after_step_20(tuned_copy)
    result = stage(tuned_copy, "train.py", *TRAIN_ARGS)
    assert "resuming from" not in result.stderr
    assert (tuned_copy / "models/base/config.json").read_bytes() == config
    assert train_losses(tuned_copy / "metrics") != train_losses(tuned_workspace / "metrics")
    old, new = (load_file(ws / "models/trained/adapter_model.safetensors") for ws in (tuned_workspace, tuned_copy))
    assert any(not torch.equal(old[k], new[k]) for k in old)


def test_schedule_and_batches_are_pure_functions_of_the_step():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(1 / 11)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert micro_batch_rows(7, 2, 3, 10, seed=1) == micro_batch_rows(7, 2, 3, 10, seed=1)
    epoch0 = [i for s in range(2) for b in micro_batch_rows(s, 2, 3, 10, seed=1) for i in b]
    assert sorted(epoch0[:10]) == list(range(10))  # an epoch visits every row once


def test_total_steps_from_epochs_or_max_steps():
    from lorapipe.core.params import TrainParams

    assert total_steps(100, params_of(TrainParams, epochs=1, micro_batch=4, grad_accum=5)) == 5
    assert total_steps(100, params_of(TrainParams, epochs=2.5, micro_batch=4, grad_accum=5)) == 13
    assert total_steps(100, params_of(TrainParams, max_steps=7)) == 7


def test_a_second_experiment_resumes_its_own_checkpoint_and_keeps_the_first_runs(tuned_copy, tmp_path):
    """Beside tuned_workspace's finished run (r=16), a second experiment (r=4) starts fresh (other params: never
    the first run's checkpoint), is interrupted after its step-8 checkpoint (its step-12 one removed: what a kill
    then leaves) and rerun with only an operational setting changed: it resumes its own checkpoint, ends like its
    uninterrupted run, and the first run's checkpoints are untouched. The kill itself:
    test_a_sigterm_then_a_sigkill_each_resume_to_the_uninterrupted_runs_losses_in_one_mlflow_run."""
    workspace, root = tuned_copy, tuned_copy / "models/checkpoints"
    (first_run,) = {c.parent for c in saved(root)}
    before = tree_state(first_run)

    def run(metrics: str, **ops: int) -> subprocess.CompletedProcess:
        write_params(workspace, train={**TRAIN, "max_steps": 12}, lora={"r": 4}, ops={"save_every": 4, **ops})
        return stage(workspace, "train.py", *stage_args("train", str(tmp_path / metrics)))

    first = run("b")
    assert "resuming from" not in first.stderr  # r=4 is another run: its own, empty folder
    assert json.loads((tmp_path / "b/train_details.json").read_text())["steps"] == 12
    (last,) = [c for c in saved(root, 12) if c.parent != first_run]
    shutil.rmtree(last)
    resumed = run("b-resumed", log_every=3)  # operational: not part of the run's identity
    assert "(step 8)" in resumed.stderr and "resuming from" in resumed.stderr
    assert train_losses(tmp_path / "b-resumed") == pytest.approx(train_losses(tmp_path / "b"), rel=1e-3)
    assert tree_state(first_run) == before


# What train and evaluate may print: their own lines (lorapipe's logger), nothing of a library's.
OWN_LINE = re.compile(r"(train|evaluate|mlflow|precision|step \d+/\d+ \|)[ :]")


def test_train_and_evaluate_print_their_own_lines_and_a_step_line_every_log_every_steps(
    prepared_copy, tmp_path, monkeypatch
):
    """Quiet by default: a real train and evaluate, in fresh processes (a new MLflow store, an empty matplotlib
    cache), print a step line every ops.log_every steps with its pace and ETA, and no progress bar and no line
    of a library's: bitsandbytes' optional Hub kernel (CPUs with AVX512-BF16), peft's use of a deprecated
    transformers property, rouge_score's "Using default tokenizer.", MLflow's database setup, matplotlib's font
    cache, transformers' loading bars and dequantization notice. With fake secrets in their environment, which
    reach nothing they print or write, the local MLflow store included."""
    ws = prepared_copy
    update_params(ws, {"ops": {"log_every": 2, "mlflow": True}})
    train = yaml.safe_load((ws / "params.yaml").read_text())["train"]
    steps, eval_every = train["max_steps"], train["eval_every"]  # 6 and 3 (STUDY_RUN)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local SQLite store
    env = {"MPLCONFIGDIR": str(tmp_path / "matplotlib"), **SECRETS}
    results = [stage(ws, f"{name}.py", *stage_args(name), env=env) for name in ("train", "evaluate")]
    printed = "".join(result.stdout + result.stderr for result in results)
    lines = printed.splitlines()
    assert lines and not [line for line in lines if not OWN_LINE.match(line)], printed
    assert "\r" not in printed and "%|" not in printed, printed  # no progress bar, not even a cleared one
    progress = [line for line in lines if re.match(r"step \d+/\d+ \| loss ", line)]
    assert [line.split("/")[0] for line in progress] == [f"step {n}" for n in range(2, steps + 1, 2)], printed
    assert all(re.search(r"\| \d+\.\d\d s/step \| (\d+m )?\d+s left$", line) for line in progress), progress
    assert len([line for line in lines if "| val_loss " in line]) == steps // eval_every
    assert (ws / "mlflow.db").is_file()
    everything = printed_and_written(ws, *results)
    for secret in SECRETS.values():
        assert secret not in everything, secret


def test_precision_auto_is_fp16_below_compute_capability_8_and_bf16_from_it(monkeypatch, caplog):
    """A T4 (compute capability 7.5), where torch's own check says bf16 is supported because it counts
    emulation: fp16 for training, decoding and export. An A100 (8.0): bf16. Faked at torch's functions, which
    read_hardware alone calls; the committed params leave the choice to it."""
    from lorapipe.core.params import ExportParams, TrainParams
    from lorapipe.model.modeling import USES, pick_dtype

    gpu = {"name": "Tesla T4", "capability": (7, 5)}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpu["capability"])
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: including_emulation or gpu["capability"] >= (8, 0),
    )
    assert torch.cuda.is_bf16_supported()  # what made `auto` train a T4 in emulated bf16
    cuda = torch.device("cuda", 0)
    with caplog.at_level("INFO", logger="lorapipe"):
        assert {use: pick_dtype("auto", cuda, use) for use in USES} == dict.fromkeys(USES, torch.float16)
    assert "precision: fp16 for training on cuda (Tesla T4 (compute capability 7.5) has no native bf16)" in caplog.text
    gpu.update(name="NVIDIA A100-SXM4-40GB", capability=(8, 0))
    assert {use: pick_dtype("auto", cuda, use) for use in USES} == dict.fromkeys(USES, torch.bfloat16)
    assert params_of(TrainParams).precision == params_of(ExportParams).dtype == "auto"
    # A value set by hand is kept, and the log line names the key and the file that set it.
    with caplog.at_level("INFO", logger="lorapipe"):
        assert pick_dtype("fp32", cuda, "export") == pick_dtype("fp32", cuda, "train") == torch.float32
    assert "(export.dtype in settings.yaml)" in caplog.text and "(train.precision in params.yaml)" in caplog.text


def test_a_resumed_run_keeps_its_dtype_where_the_device_computes_it_and_is_refused_in_one_line_where_not():
    """A T4's fp16 run resumed on an L4 goes on in fp16 (auto would pick bf16 there); an A100's bf16 run
    resumed on a T4 is refused; the CPU computes every dtype."""
    from lorapipe.core.cli import UserError
    from lorapipe.model.modeling import Hardware, choose_dtype

    t4, l4 = Hardware("cuda", "Tesla T4", (7, 5)), Hardware("cuda", "NVIDIA L4", (8, 9))
    assert choose_dtype("auto", l4, "train")[0] == torch.bfloat16
    assert choose_dtype("auto", l4, "train", started_in="fp16")[0] == torch.float16
    assert choose_dtype("auto", Hardware("cpu", "cpu"), "train", started_in="bf16")[0] == torch.bfloat16
    with pytest.raises(UserError) as refused:
        choose_dtype("auto", t4, "train", started_in="bf16")
    assert "\n" not in str(refused.value)
    assert "trained in bf16 so far, which Tesla T4 (compute capability 7.5) does not compute" in str(refused.value)
