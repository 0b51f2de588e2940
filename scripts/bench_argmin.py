"""Time render-argmin on a trained checkpoint: the bottom-up pass alone, with the predicted
class's rendering (what evaluation paid for its reconstruction alone), and with every class
rendered instead (what validation and test pay now: the reconstruction is read off the class
renderings), each scaled to 10k images, in fp32 and in bf16 with channels-last maps.

    python scripts/bench_argmin.py <run>/checkpoints/last.ckpt [--images 2000] [--batch 100]
        [--device cuda]

The last column renders all classes as one batch of classes x batch images instead of a loop
over the classes (the alternative the loop was chosen over). --profile: the top operators of
the bf16 + channels-last every-class pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from drmm_lightning.cli.checkpoints import load_run
from drmm_lightning.cli.render import eval_images
from drmm_lightning.models import DRMM, Inference, Switches
from drmm_lightning.models.posterior import classify_by_rendering
from drmm_lightning.training.module import to_channels_last


def render_stacked(net: DRMM, inference: Inference) -> torch.Tensor:
    """Every class rendered in one top-down pass over the switches tiled once per class."""
    n, device = len(inference.logits), inference.logits.device
    classes = torch.arange(net.num_classes, device=device).repeat_interleave(n)
    tiled = [
        Switches(
            s.a.repeat(net.num_classes, 1, 1, 1),
            None if s.t is None else s.t.repeat(net.num_classes, 1, 1, 1),
            s.size,
            s.scale,
        )
        for s in inference.switches
    ]
    return net.render(Inference(inference.logits, inference.features, tiled), classes).image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)  # the test loader's
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    module, datamodule = load_run(args.ckpt)
    device = torch.device(args.device)
    net = module.net.to(device)
    x = eval_images(datamodule, args.images)[0].to(device)

    def seconds_per_10k(bf16: bool, what: str) -> float:
        images = to_channels_last(x) if bf16 else x
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(images), args.batch):
                batch = images[i : i + args.batch]
                inference = net.infer(batch)
                if what == "render":
                    net.render(inference)
                elif what == "argmin":
                    classify_by_rendering(net, inference, batch)
                elif what == "stacked":
                    render_stacked(net, inference)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 10_000 / len(x)

    if device.type != "cpu":
        seconds_per_10k(False, "argmin")  # warm-up: kernel selection, allocator
    for bf16 in (False, True):
        if bf16:
            net.to(memory_format=torch.channels_last)  # as model.channels_last=true does
        whats = ("infer", "render", "argmin", "stacked")
        times = {what: seconds_per_10k(bf16, what) for what in whats}
        print(
            f"{'bf16+cl' if bf16 else 'fp32'}: bottom-up {times['infer']:.1f} s, + rendering the "
            f"predicted class {times['render']:.1f} s, + rendering every class "
            f"{times['argmin']:.1f} s (as one stacked batch: {times['stacked']:.1f} s) per 10k "
            "images"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            seconds_per_10k(True, "argmin")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
