"""The paper's result tables (tables.py: every cell, its preset and the paper's number) and the
aggregation of run directories into measured tables (aggregate.py), used by scripts/."""
