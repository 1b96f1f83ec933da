"""lorapipe: a DVC pipeline that fine-tunes a small LLM with QLoRA to describe products from titles.

A *run* is one execution of the pipeline for one set of params: what `dvc exp run` makes and
`dvc exp show`, the results page and the PR report list. Its training is identified by a
fingerprint (lorapipe.train.checkpoints), what it trained is recorded beside the adapter (the training
record, lorapipe.train.training_record), and it is tracked as an MLflow run, which the code always
calls `mlflow_run` (`mlflow_run_id`, mlflow_run.json).
"""

import logging
import os
import sys
import warnings

# Third-party lines that no user can act on, silenced here because every stage and tool imports lorapipe
# before peft or rouge_score (and through peft, bitsandbytes) print them; each filter is as narrow as the line.
# bitsandbytes, on a CPU with AVX512-BF16, tries at import to fetch an optional faster kernel from the Hub
# (the `kernels` package, kernels-community/quantization-bitsandbytes) and warns without it, then uses its
# own CPU kernel: nothing is wrong, and offline the Hub is out of reach anyway.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")
)
# rouge_score logs "Using default tokenizer." at INFO each time a scorer is made (base and tuned: twice).
logging.getLogger("absl").setLevel(logging.WARNING)
# Progress bars, ours and every library's (transformers loading weights or reading a GGUF, the Hub's
# downloads): none for brief work. A bar shows once its work has run 2 s on a terminal; where stderr is no
# terminal (Colab's `!` cells, a CI log), after 30 s, then updated every 30 s. tqdm's own settings, read
# when tqdm is first imported, which every stage does after lorapipe (torch and transformers import it);
# a user's own TQDM_DELAY or TQDM_MININTERVAL wins.
if sys.stderr is not None and sys.stderr.isatty():
    os.environ.setdefault("TQDM_DELAY", "2")
else:
    os.environ.setdefault("TQDM_DELAY", "30")
    os.environ.setdefault("TQDM_MININTERVAL", "30")
# MLflow logs at INFO through a handler of its own ("Creating initial MLflow database tables...", each run's
# link, which our `mlflow: run ...` line gives): its documented level, read when mlflow is imported; a
# user's own MLFLOW_LOGGING_LEVEL wins.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# transformers warns on every dequantize (evaluate and export merge a QLoRA adapter) that it dequantized in
# the dtype we asked for.
logging.getLogger("transformers.integrations.bitsandbytes").addFilter(
    lambda record: not record.getMessage().startswith("The modules are dequantized in")
)
# peft's PeftModel reads transformers' `is_gradient_checkpointing`, deprecated in favour of
# `is_activation_checkpointing`: peft's to change, not ours.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
