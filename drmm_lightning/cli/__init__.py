"""Command-line entry points (Hydra): drmm-train and drmm-eval."""
