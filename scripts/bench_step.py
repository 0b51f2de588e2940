"""Time one training step of the default experiment's DRMM (EG) and of the same network as a
plain CNN, at each speed setting, beside what this machine's matrix multiplies reach.

EG step: bottom-up on 100 labeled + 100 unlabeled images, render, every term of the default
objective, backward, Adam step. CNN step: the same architecture as an ordinary torch.nn CNN
(models/cnn.py), cross-entropy on the same 200 images. Settings: fp32 (the default), channels-
last memory (cl), bf16 autocast, both, and with --compile the compiled objective. FLOPs come
from torch.utils.flop_counter, so GFLOP/s says how close each step is to the matmul rates
measured in the same run. Writes a JSON and a markdown table (docs/benchmarks.md).

    python scripts/bench_step.py [--steps 20] [--compile] [--settings fp32,bf16+cl]
        [--profile bf16+cl] [--device cpu]
        [--out outputs/bench] [override ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from drmm_lightning.cli.config import CONF_DIR, check_train_overrides
from drmm_lightning.cli.train import build_module
from drmm_lightning.models import cross_entropy
from drmm_lightning.models.cnn import plain_cnn
from drmm_lightning.training import DRMMLitModule

SETTINGS = {  # name: (channels_last, bf16, compile)
    "fp32": (False, False, False),
    "fp32+cl": (True, False, False),
    "bf16": (False, True, False),
    "bf16+cl": (True, True, False),
}
COMPILED = {"fp32+compile": (False, False, True), "bf16+cl+compile": (True, True, True)}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "cpu",
    )
    return f"{model}, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(step: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall milliseconds of `step` after `warmup` calls. Timed by hand rather than with
    torch.utils.benchmark.Timer: its timeit gives one mean over all calls (two warm-up calls
    of its own each time, one thread unless told), and the median of single steps is what
    docs/benchmarks.md reports, robust to the other processes of a shared machine."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    """GFLOP/s of an n x n matrix product in `dtype` on this device."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / median_ms(lambda: a @ b, device, 10, 3) / 1e6


def default_module(overrides: list[str]) -> DRMMLitModule:
    """The LightningModule of the default experiment (conf/train.yaml) for MNIST's shape."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    shape = SimpleNamespace(
        in_channels=1, num_classes=10, image_size=28, transform=SimpleNamespace(std=(0.3081,))
    )
    return build_module(cfg, shape)


def make_steps(
    module: DRMMLitModule, setting: tuple[bool, bool, bool], device: torch.device, batch: int
) -> dict[str, Callable[[], object]]:
    """The EG and CNN training steps under one setting, on a fixed batch of images."""
    channels_last, bf16, compiled = setting
    layout = torch.channels_last if channels_last else torch.contiguous_format
    # Module.to takes a device and a memory format together; torch's overloads omit the pair
    net = copy.deepcopy(module.net)
    net = net.to(device, memory_format=layout)  # type: ignore[call-overload]
    cnn = plain_cnn(copy.deepcopy(net))
    cnn = cnn.to(device, memory_format=layout)  # type: ignore[call-overload]
    x = torch.randn(2 * batch, 1, 28, 28, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (2 * batch,), device=device)
    objective = module.objective.__call__
    forward = cnn.forward
    if compiled:
        objective, forward = torch.compile(objective), torch.compile(forward)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    optimizers = [torch.optim.Adam(m.parameters(), 1e-3) for m in (net, cnn)]

    def eg() -> None:
        with autocast():
            loss = objective(net, (x[:batch], y[:batch]), x[batch:]).loss
        optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[0].step()

    def ce() -> None:
        with autocast():
            loss = cross_entropy(forward(x), y)
        optimizers[1].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[1].step()

    return {"eg": eg, "cnn": ce}


def top_ops(step: Callable[[], object], steps: int = 5, rows: int = 15) -> str:
    """torch.profiler's table of the operators taking the most time over `steps` calls."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    averages = prof.key_averages(group_by_input_shape=True)
    return averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call (forward and backward), counted by torch.utils.flop_counter."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def table(result: dict) -> str:
    """The markdown table of a result (docs/benchmarks.md)."""
    rows = [
        f"Device: {result['device']}; torch {result['torch']}; batch {result['batch']} + "
        f"{result['batch']}; median of {result['steps']} steps. Matrix multiply 2048^2: fp32 "
        f"{result['matmul_gflops']['fp32']:.0f} GFLOP/s, bf16 {result['matmul_gflops']['bf16']:.0f}"
        f" GFLOP/s. FLOPs per step: EG {result['flops']['eg'] / 1e9:.1f} G, CNN "
        f"{result['flops']['cnn'] / 1e9:.1f} G (ratio {result['flops']['ratio']:.2f}).",
        "",
        "| setting | EG step ms | EG images/s | EG GFLOP/s | CNN step ms | CNN images/s | "
        "CNN GFLOP/s | EG / CNN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["settings"].items():
        rows.append(
            f"| {name} | {r['eg_ms']:.1f} | {r['eg_images_per_s']:.0f} | {r['eg_gflops']:.0f} | "
            f"{r['cnn_ms']:.1f} | {r['cnn_images_per_s']:.0f} | {r['cnn_gflops']:.0f} | "
            f"{r['eg_ms'] / r['cnn_ms']:.2f}x |"
        )
    s = result["summary"]
    rows += [
        "",
        f"Best EG step: **{s['best_eg']}**, {s['best_eg_ms']:.1f} ms: {s['speedup'] or 0:.2f}x "
        f"faster than the default fp32 step; FLOP floor (FLOP ratio x best CNN step, "
        f"{s['best_cnn']}) {s['floor_ms']:.1f} ms, so the best EG step is "
        f"{s['over_floor']:.2f}x its floor. "
        f"Peak memory: {result['peak_memory_mb']:.0f} MB ({result['peak_memory_kind']}).",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="labeled and unlabeled batch size")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--profile", help="a setting whose EG step's top operators to print")
    parser.add_argument("--settings", help="comma-separated settings to time (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="outputs/bench", help="folder for the JSON and table")
    parser.add_argument("overrides", nargs="*", help="config overrides for the default experiment")
    args = parser.parse_args(argv)
    check_train_overrides(args.overrides, None, parser.format_usage())
    torch.manual_seed(0)
    device = torch.device(args.device)
    module = default_module(args.overrides)
    settings = {**SETTINGS, **(COMPILED if args.compile else {})}
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    flops = {k: step_flops(v) for k, v in make_steps(module, SETTINGS["fp32"], device, 4).items()}
    flops = {k: v * args.batch / 4 for k, v in flops.items()}  # linear in the batch size
    results = {}
    for name, setting in settings.items():
        steps = make_steps(module, setting, device, args.batch)
        ms = {k: median_ms(v, device, args.steps, args.warmup) for k, v in steps.items()}
        results[name] = {
            **{f"{k}_ms": v for k, v in ms.items()},
            **{f"{k}_images_per_s": 2e3 * args.batch / v for k, v in ms.items()},
            **{f"{k}_gflops": flops[k] / v / 1e6 for k, v in ms.items()},
        }
        print(f"  {name:16s} EG {ms['eg']:7.1f} ms   CNN {ms['cnn']:7.1f} ms", flush=True)
    best_eg = min(results, key=lambda k: results[k]["eg_ms"])
    best_cnn = min(results, key=lambda k: results[k]["cnn_ms"])
    floor = flops["eg"] / flops["cnn"] * results[best_cnn]["cnn_ms"]
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "GPU, allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS"
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "batch": args.batch,
        "steps": args.steps,
        "matmul_gflops": {
            "fp32": matmul_gflops(torch.float32, device),
            "bf16": matmul_gflops(torch.bfloat16, device),
        },
        "flops": {**flops, "ratio": flops["eg"] / flops["cnn"]},
        "settings": results,
        "summary": {
            "best_eg": best_eg,
            "best_eg_ms": results[best_eg]["eg_ms"],
            "best_cnn": best_cnn,
            "speedup": results["fp32"]["eg_ms"] / results[best_eg]["eg_ms"]
            if "fp32" in results
            else None,
            "floor_ms": floor,
            "over_floor": results[best_eg]["eg_ms"] / floor,
        },
        "peak_memory_mb": peak,
        "peak_memory_kind": kind,
        "overrides": args.overrides,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step_{device.type}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.profile:
        profiled = top_ops(make_steps(module, settings[args.profile], device, args.batch)["eg"])
        (out / f"profile_{args.profile}.txt").write_text(profiled + "\n")
        print(profiled)
    markdown = table(result)
    (out / f"step_{device.type}.md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {out / f'step_{device.type}.json'} and .md")


if __name__ == "__main__":
    main()
