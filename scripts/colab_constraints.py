"""Write constraints-colab.txt: constraints.txt's tested versions, less what a Colab runtime must keep its own of.

    python scripts/colab_constraints.py > constraints-colab.txt      # make lock does it

The notebook and the cloud VM install with it (`pip install -r requirements.txt -c constraints-colab.txt`).
Kept as the runtime (or the VM image) ships them: the CUDA build of torch and its CUDA libraries, numpy,
pandas and pyarrow (replacing them in a running Colab needs a restart), and the packages of Colab's kernel
and of google-colab's exact pins. Everything else (transformers, peft, DVC, MLflow, bitsandbytes, ...)
gets the version the tests ran. tests/test_notebook.py resolves the notebook's install against a Colab
release's published package versions, offline of any GPU.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTED = Path("constraints.txt")
# Normalized project names, or prefixes ending in '-': what Colab's own runtime must keep.
KEEP = (
    *("torch", "torchvision", "torchaudio", "torchcodec", "triton", "nvidia-", "cuda-"),  # its CUDA build
    *("numpy", "pandas", "pyarrow"),  # loaded by the running runtime: replacing them needs a restart
    # the kernel, and google-colab's exact pins
    *("google-colab", "google-auth", "ipykernel", "ipyparallel", "ipython", "notebook", "portpicker", "requests"),
    *("tornado", "jupyter-client", "jupyter-core", "jupyter-server", "pyzmq", "traitlets", "psutil", "debugpy"),
    *("matplotlib-inline", "prompt-toolkit", "pygments"),
)


def package_name(line: str) -> str:
    """The normalized project name a requirement line starts with ('' for comments and blanks)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def kept(name: str) -> bool:
    """Whether Colab keeps its own `name` (a normalized project name)."""
    return any(name.startswith(k) if k.endswith("-") else name == k for k in KEEP)


def main() -> None:
    print("# Tested versions (constraints.txt) less what Colab or a cloud GPU image keeps its own of: the CUDA")
    print("# torch, numpy, pandas, pyarrow, Colab's kernel (scripts/colab_constraints.py). Regenerate: make lock.")
    for line in TESTED.read_text().splitlines():
        if package_name(line) and not kept(package_name(line)):
            print(line)


if __name__ == "__main__":
    main()
