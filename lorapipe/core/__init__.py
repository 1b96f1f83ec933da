"""What every layer shares: params, the paths of outputs, errors and logging, atomic writes, git and DVC calls."""
