"""Loading the base model (quantized or not) and making it trainable: adapters (LoRA, DoRA, rsLoRA) or every weight."""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from lorapipe.core.cli import UserError, log
from lorapipe.core.params import FILE_OF, PARAMS_FILE, LoraParams, QuantParams


def pick_device() -> torch.device:
    """The current GPU (under torchrun: this process's own), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # params' names
NATIVE_BF16 = (8, 0)  # the compute capability from which a GPU computes bf16 natively (Ampere: A100, L4, A10G)
USES = {"train": "training", "decode": "decoding", "export": "the exported weights"}


@dataclass(frozen=True)
class Hardware:
    """What the dtype decision reads of a device."""

    kind: str  # torch's device type: "cuda" or "cpu"
    name: str  # "Tesla T4", or "cpu"
    capability: tuple[int, int] = (0, 0)  # a GPU's compute capability
    cpu_native_bf16: bool = False  # a CPU with AVX512-BF16 or AMX

    def supports(self, dtype: torch.dtype) -> bool:
        """Whether it computes `dtype` natively: bf16 on a GPU needs compute capability 8.0 (the CPU runs every
        dtype, bf16 and fp16 slowly without the instructions)."""
        return not (self.kind == "cuda" and dtype == torch.bfloat16 and self.capability < NATIVE_BF16)


def read_hardware(device: torch.device) -> Hardware:
    """The device's properties as torch reports them; nothing else here asks torch about the hardware."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return Hardware("cuda", name, tuple(torch.cuda.get_device_capability(device)))
    return Hardware("cpu", "cpu", cpu_native_bf16=cpu_has_native_bf16())


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float16` -> `fp16`, as params.yaml names it."""
    return next(name for name, value in DTYPES.items() if value == dtype)


def choose_dtype(precision: str, hardware: Hardware, use: str, started_in: str = "") -> tuple[torch.dtype, str]:
    """The dtype for `use` (USES) on `hardware` and why: the one decision for training, decoding and export.

    `auto`: on a GPU, bf16 from compute capability 8.0 (A100, L4, A10G), fp16 below it (a T4 "supports" bf16
    only by emulating it, much slower, and bitsandbytes' 4-bit compute has no tensor cores for it). On the
    CPU, fp32, except for training on a CPU that computes bf16 natively (AVX512-BF16 or AMX: oneDNN's bf16
    matmuls take 6-8 s a demo step instead of ~12 s) and for export (bf16 halves the file and loads
    everywhere). Decoding stays fp32 on the CPU: bf16 rounding makes a title decoded alone (the app, the
    published card) differ from the same title in evaluate's padded batch, and those must read alike.
    `started_in` (training only): the dtype a resumed run trained in so far, which it keeps where the
    hardware computes it; elsewhere it is refused in one line.
    """
    if started_in:
        dtype = DTYPES[started_in]
        if not hardware.supports(dtype):
            raise UserError(
                f"train: this run trained in {started_in} so far, which {hardware.name} (compute capability "
                f"{'.'.join(map(str, hardware.capability))}) does not compute natively: resume it on a GPU of "
                f"compute capability {'.'.join(map(str, NATIVE_BF16))} or above, or set train.precision to start "
                "a new run"
            )
        return dtype, f"the dtype this run started in, kept on {hardware.name} so the resumed steps compute alike"
    if precision != "auto":
        key = "export.dtype" if use == "export" else "train.precision"
        return DTYPES[precision], f"{key} in {FILE_OF[key.partition('.')[0]]}"
    if hardware.kind == "cuda":
        capability = ".".join(map(str, hardware.capability))
        if hardware.capability >= NATIVE_BF16:
            return torch.bfloat16, f"{hardware.name} (compute capability {capability}) computes bf16 natively"
        return torch.float16, f"{hardware.name} (compute capability {capability}) has no native bf16"
    if use == "export":
        return torch.bfloat16, "half the size of fp32, and it loads everywhere"
    if use == "train" and hardware.cpu_native_bf16:
        return torch.bfloat16, "this CPU computes bf16 natively (AVX512-BF16 or AMX)"
    if use == "decode":
        return torch.float32, "a title decodes alone as it does in a batch"
    return torch.float32, "this CPU has no native bf16"


def pick_dtype(precision: str, device: torch.device, use: str, started_in: str = "") -> torch.dtype:
    """choose_dtype on `device`'s hardware, said in one log line."""
    dtype, why = choose_dtype(precision, read_hardware(device), use, started_in)
    log.info(f"precision: {dtype_name(dtype)} for {USES[use]} on {device.type} ({why})")
    return dtype


def cpu_has_native_bf16() -> bool:
    """torch's own CPU feature checks (private, hence looked up with a fallback)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def without_loading_options(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """`tokenizer` without how this process loaded it (HF_HUB_OFFLINE, say), which is not what it is: saved
    with a model, those options would give the same tokenizer other bytes on another run."""
    for loading_option in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(loading_option, None)
    return tokenizer


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer; one that needs the folder's own Python code is refused (transformers would
    otherwise ask on the terminal whether to run it)."""
    tokenizer = without_loading_options(AutoTokenizer.from_pretrained(path, trust_remote_code=False))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quant: QuantParams, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    settings = quant.bitsandbytes_settings()
    if settings is None:
        return None
    return BitsAndBytesConfig(**settings, **({"bnb_4bit_compute_dtype": compute_dtype} if quant.bits == 4 else {}))


def load_model(
    path: Path, dtype: torch.dtype, device: torch.device, quant: QuantParams | None = None
) -> torch.nn.Module:
    """Load the base model from safetensors only, quantized when `quant` asks for it."""
    if not any(Path(path).glob("*.safetensors")):
        raise UserError(f"{path}: no *.safetensors weights; run the base_model stage (dvc repro base_model)")
    qconfig = quantization_config(quant, dtype) if quant else None
    kwargs = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        quantization_config=qconfig,
        use_safetensors=True,
        trust_remote_code=False,
        **kwargs,
    )
    return model if device.type == "cuda" else model.to(device)


def add_lora(model: torch.nn.Module, lora: LoraParams, grad_checkpointing: bool, quantized: bool) -> torch.nn.Module:
    """Wrap `model` with trainable adapters on `lora.target_modules`: LoRA, DoRA or rsLoRA (`lora.method`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_checkpointing)
        keep_cpu_4bit_layout(model)
    elif grad_checkpointing:
        model.enable_input_require_grads()
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    kinds: dict[str, set[str]] = {}  # leaf module name -> the classes that carry it
    linear: set[str] = set()  # bitsandbytes' 4/8-bit layers are nn.Linear subclasses too
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        kinds.setdefault(leaf, set()).add(type(module).__name__)
        if isinstance(module, torch.nn.Linear):
            linear.add(leaf)
    missing = [m for m in lora.target_modules if m not in kinds]
    if missing:
        raise UserError(f"params.yaml: lora.target_modules {missing} are not modules of this model")
    not_linear = [f"{m} ({'/'.join(sorted(kinds[m]))})" for m in lora.target_modules if m not in linear]
    if not_linear:
        raise UserError(
            f"params.yaml: lora.target_modules must name linear layers (q_proj, ..., down_proj); "
            f"{', '.join(not_linear)} are not"
        )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
        use_dora=lora.method == "dora",
        use_rslora=lora.method == "rslora",
    )
    model = get_peft_model(model, config)
    # PEFT keeps the names as a set, saved in hash order (PYTHONHASHSEED): sorted, the adapter's
    # config has the same bytes every run, and DVC sees the same adapter.
    model.peft_config["default"].target_modules = sorted(lora.target_modules)
    return model


# Full fine-tuning holds, per parameter and before any activation: fp32 weights (4 bytes), their
# gradients (4) and AdamW's two moments (8). TinyLlama's 1.1B need 16.4 GiB: more than a 16 GB T4.
FULL_BYTES_PER_PARAM = 16


def parameter_count(model_dir: Path) -> int:
    """Parameters in the folder's safetensors, read from their headers (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(path, "pt") as weights:
            names = weights.keys()  # safe_open's method: it is no dict to iterate
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def device_memory_bytes(device: torch.device) -> int:
    """What the device holds: the GPU's memory, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def full_finetune_refusal(params: int, device_bytes: int, device_name: str) -> str | None:
    """Why full fine-tuning of `params` parameters cannot fit in `device_bytes`, with what would; None if it can."""
    need = params * FULL_BYTES_PER_PARAM
    if need <= device_bytes:
        return None
    return (
        f"{PARAMS_FILE}: lora.method full: {params / 1e9:.2f}B parameters need {need / 2**30:.1f} GiB for fp32 "
        f"weights, gradients and AdamW states ({FULL_BYTES_PER_PARAM} bytes each) before activations, and "
        f"{device_name} has {device_bytes / 2**30:.1f} GiB: use lora.method lora, dora or rslora (quant.bits 4 "
        f"holds the base in about half a byte per parameter), or a model of at most "
        f"{device_bytes // FULL_BYTES_PER_PARAM / 1e6:,.0f}M parameters"
    )


def check_method_runs_here(lora: LoraParams, quant: QuantParams, model_dir: Path, device: torch.device) -> None:
    """Refuse, before loading anything, what cannot train on this device."""
    if lora.method == "dora" and quant.bits == 8 and device.type == "cpu":
        raise UserError(
            f"{PARAMS_FILE}: lora.method dora on quant.bits 8 does not train on the CPU (bitsandbytes' 8-bit CPU "
            "matmul fails on the weight scales PEFT's DoRA reads); use quant.bits 4 or 16 here, or 8 on a GPU"
        )
    if lora.method == "full":
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "this machine's memory"
        refusal = full_finetune_refusal(parameter_count(model_dir), device_memory_bytes(device), name)
        if refusal:
            raise UserError(refusal)


def train_all_weights(model: torch.nn.Module, grad_checkpointing: bool) -> torch.nn.Module:
    """Full fine-tuning: every weight of `model` (loaded in fp32: AdamW's updates are far below bf16's
    resolution, so the weights stay fp32 and only the compute runs in bf16/fp16 under autocast)."""
    model.requires_grad_(True)
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def keep_cpu_4bit_layout(model: torch.nn.Module) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its AVX512-BF16 CPU kernel.

    It repacks a layer at its first no-grad eval-mode forward (validation) and unpacks it at the
    next state_dict (a checkpoint save), rounding the scales to bf16 on the way: an uninterrupted
    run would train on other weights after its first validation than a run resumed from that
    step's checkpoint. Training and validation both take the plain dequantizing path instead.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_tuned_model(
    model_dir: Path, trained: Path, method: str, quant: QuantParams, dtype: torch.dtype, device: torch.device
) -> torch.nn.Module:
    """What the train stage wrote to `trained` as a plain model: the whole model (lora.method full), or
    the base with the adapter merged in, on the weights the adapter was trained against.

    A QLoRA adapter learned to correct the *quantized* base: merging it into the original
    weights shifts every output. So the base is quantized as in training, dequantized
    (exactly those values, in `dtype`), and the adapter merged into that: inference is as
    fast as a plain model and decodes like the training-time model. `method` (lora.method) and `quant`
    are the training's: `lorapipe.train.training_record.load_training_record(trained)`.
    """
    from peft import PeftModel

    if method == "full":
        return load_model(trained, dtype, device)
    if quant.bits == 16:
        base = load_model(model_dir, dtype, device)
    else:
        base = load_model(model_dir, dtype, device, quant).dequantize()
    return PeftModel.from_pretrained(base, trained).merge_and_unload()


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
