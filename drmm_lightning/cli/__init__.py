"""Command-line entry points (Hydra): drmm-train (train.py), drmm-eval (eval.py), drmm-render
(render.py); what they share: the config checks (config.py), checkpoint lookup (checkpoints.py),
building callbacks and loggers (build.py) and reporting (report.py)."""
