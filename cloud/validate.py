"""Check SkyPilot task YAMLs with SkyPilot's own parser, offline: what `sky jobs launch` would refuse.

    .venv-sky/bin/python cloud/validate.py cloud/train.yaml     # make sky installs the launcher's venv

Runs in the launcher's venv (SkyPilot only, no lorapipe): one `error:` line per refused file, exit 1.
"""

from __future__ import annotations

import sys

import sky
import yaml


def validate(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    # Envs left null are given at launch (--env NAME, from the launching shell): stand-ins here.
    stand_ins = [(name, "stand-in") for name, value in (config.get("envs") or {}).items() if value is None]
    sky.Task.from_yaml_config(config, env_overrides=stand_ins)


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        try:
            validate(path)
        except Exception as err:  # SkyPilot's schema errors come as several types; any refusal counts
            failed += 1
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {path}: {reason}", file=sys.stderr)
        else:
            print(f"{path}: valid SkyPilot task")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
