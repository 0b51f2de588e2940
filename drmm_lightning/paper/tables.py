"""The paper's result tables (Tables 1, 3, 4, 5): every DRMM-family and Convnet cell, its preset
(conf/experiment/paper/<preset>.yaml) and the test error the paper reports, in percent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One cell: a row of a table at one number of labels, reproduced by one preset."""

    row: str
    column: str
    preset: str
    paper: float | None  # None: a control of ours that the paper does not report


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    cells: tuple[Cell, ...]


MNIST_N = ("100", "600", "1000", "3000")


def paper_row(
    name: str, preset: str, values: tuple[float | None, ...], columns: tuple[str, ...] = MNIST_N
) -> list[Cell]:
    """The cells of one row; `preset` holds {n} for the number of labels of each column."""
    return [Cell(name, n, preset.format(n=n), v) for n, v in zip(columns, values)]


CONVNET = paper_row(
    "Convnet (drmm5 architecture, labels only)", "mnist_convnet5_sup_{n}", (22.98, 7.86, 6.45, 3.35)
)
RFM_SEMI = paper_row("RFM semi-sup", "mnist_rfm_semi_sup_{n}", (14.47, 5.61, 4.67, 2.96))
DRMM5_SEMI = paper_row(
    "DRMM 5-layer semi-sup", "mnist_drmm5_semi_sup_{n}", (3.50, 1.56, 1.67, 0.91)
)
RFM_PRETR = paper_row("RFM unsup-pretr", "mnist_rfm_unsup_pretr_{n}", (16.2, 5.65, 4.64, 2.95))
DRMM5_PRETR = paper_row(
    "DRMM 5-layer unsup-pretr", "mnist_drmm5_unsup_pretr_{n}", (12.03, 3.61, 2.73, 1.68)
)

TABLES: dict[str, Table] = {
    "1": Table(
        "Table 1: semi-supervised MNIST, N_U = 60K, test error (%)",
        MNIST_N,
        (
            *CONVNET,
            *RFM_SEMI,
            *paper_row(
                "DRMM 2-layer semi-sup", "mnist_drmm2_semi_sup_{n}", (11.81, 3.73, 2.88, 1.72)
            ),
            *DRMM5_SEMI,
            *paper_row("DRMM 5-layer semi-sup NN+KL", "mnist_drmm5_nn_kl_semi_sup_{n}", (0.57,)),
            *paper_row(
                "control (ours): drmm5, CE + KL term, no rendering",
                "mnist_drmm5_entropy_only_semi_sup_{n}",
                (None, None, None, None),
            ),
            *RFM_PRETR,
            *DRMM5_PRETR,
        ),
    ),
    "3": Table(
        "Table 3: MNIST, supervised / unsup-pretr / semi-sup, test error (%)",
        (*MNIST_N, "60000"),
        (
            *paper_row("RFM sup", "mnist_rfm_sup_{n}", (1.21,), ("60000",)),
            *paper_row("Convnet 1-layer sup", "mnist_convnet1_sup_{n}", (1.30,), ("60000",)),
            *paper_row("DRMM 5-layer sup", "mnist_drmm5_sup_{n}", (0.89,), ("60000",)),
            *paper_row("Convnet 5-layer sup", "mnist_convnet5_sup_{n}", (0.81,), ("60000",)),
            *RFM_PRETR,
            *paper_row("RFM unsup-pretr", "mnist_rfm_unsup_pretr_{n}", (1.17,), ("60000",)),
            *DRMM5_PRETR,
            *paper_row(
                "DRMM 5-layer unsup-pretr", "mnist_drmm5_unsup_pretr_{n}", (0.58,), ("60000",)
            ),
            *RFM_SEMI,
            *paper_row("RFM semi-sup", "mnist_rfm_semi_sup_{n}", (1.27,), ("60000",)),
            *DRMM5_SEMI,
            *paper_row("DRMM 5-layer semi-sup", "mnist_drmm5_semi_sup_{n}", (0.51,), ("60000",)),
            *CONVNET,
        ),
    ),
    "4": Table(
        "Table 4: semi-supervised CIFAR-10, N_U = 50K, test error (%)",
        ("4000", "50000"),
        (
            *paper_row(
                "Convnet (drmm9 architecture, labels only)",
                "cifar10_convnet9_sup_{n}",
                (43.90, 27.17),
                ("4000", "50000"),
            ),
            *paper_row(
                "DRMM 2-layer", "cifar10_drmm2_semi_sup_{n}", (39.2, 24.60), ("4000", "50000")
            ),
            *paper_row(
                "DRMM 9-layer", "cifar10_drmm9_semi_sup_{n}", (23.24, 11.37), ("4000", "50000")
            ),
        ),
    ),
    "5": Table(
        "Table 5: MNIST with N labeled images and no unlabeled ones, test error (%)",
        MNIST_N,
        (
            *paper_row("Convnet (1 layer)", "mnist_convnet1_sup_{n}", (18.33, 10.36, 8.07, 4.47)),
            *paper_row("RFM (1 layer)", "mnist_rfm_sup_{n}", (22.68, 6.51, 4.66, 3.55)),
            *paper_row("DRMM 2-layer", "mnist_drmm2_sup_{n}", (12.56, 6.50, 4.75, 2.66)),
            *paper_row("DRMM 5-layer", "mnist_drmm5_sup_{n}", (11.97, 3.70, 2.72, 1.60)),
        ),
    ),
}


def all_presets() -> dict[str, Cell]:
    """Every preset named by a table, with one of its cells."""
    return {cell.preset: cell for table in TABLES.values() for cell in table.cells}


def preset_files() -> dict[str, str]:
    """The text of every leaf preset conf/experiment/paper/<preset>.yaml: its base (the
    architecture, objective and regime in paper/_<base>.yaml), its number of labels, and the
    cells it reproduces with the paper's numbers (scripts/make_presets.py writes them)."""
    cells: dict[str, list[str]] = {}
    for key, table in TABLES.items():
        for cell in table.cells:
            result = "not reported (our control)" if cell.paper is None else f"{cell.paper:g}%"
            result += "" if cell.paper is None else " test error"
            cells.setdefault(cell.preset, []).append(
                f"Table {key}, {cell.row}, N_L = {cell.column}: paper {result}"
            )
    files = {}
    for preset, described in cells.items():
        base, labels = preset.rsplit("_", 1)
        files[preset] = (
            "# @package _global_\n"
            f"# {'; '.join(described)}.\n"
            f"defaults: [paper/_{base}]\n"
            f"data: {{num_labeled: {labels}}}\n"
        )
    return files
