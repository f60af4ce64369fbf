"""Benchmark: BatchPolicyTransform on one batch in the four layouts a training loop may hand it.

uint8 or [0, 1] float32, each contiguous (NCHW) or in channels_last. The batched path's kernels work on
contiguous uint8 pixels: a channels_last batch is copied into that layout and the output back into the
caller's, and a float batch runs its ops in float arithmetic. This measures what each costs, on the same
images and policy (torchvision's CIFAR10 AutoAugment policy) with the same draws in a round, as the median
over interleaved rounds (each in another order); the time to put a batch into channels_last is not counted.
Run:  python scripts/bench_layouts.py [--size 224] [--batch 128] [--threads 2] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from policysearch.arguments import whole_number  # noqa: E402
from policysearch.augment.transforms import BatchPolicyTransform  # noqa: E402

LAYOUTS = ("uint8", "uint8 channels_last", "float32", "float32 channels_last")


def batches(size: int, batch: int) -> dict[str, torch.Tensor]:
    """The same random images in each layout."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    floats = images.float() / 255
    return {"uint8": images, "uint8 channels_last": images.contiguous(memory_format=torch.channels_last),
            "float32": floats, "float32 channels_last": floats.contiguous(memory_format=torch.channels_last)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=whole_number, default=224, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--batch", type=whole_number, default=128, help="images per batch (default: %(default)s)")
    parser.add_argument("--threads", type=whole_number, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--repeats", type=whole_number, default=7, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    for name in ("size", "batch", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    transform = BatchPolicyTransform("torchvision:cifar10")
    torch.manual_seed(0)
    inputs = batches(args.size, args.batch)
    for batch in inputs.values():  # warm: compiled kernels, allocations
        transform(batch)
    seconds: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for round_ in range(args.repeats):
        for k in range(len(LAYOUTS)):  # each round in another order, each layout with the round's same draws
            layout = LAYOUTS[(round_ + k) % len(LAYOUTS)]
            torch.manual_seed(round_)
            started = time.perf_counter()
            transform(inputs[layout])
            seconds[layout].append(time.perf_counter() - started)
    base = statistics.median(seconds["uint8"])
    rows = {layout: {"ms_per_batch": 1000 * statistics.median(values),
                     "images_per_s": args.batch / statistics.median(values),
                     "times_uint8": statistics.median(values) / base,
                     "rounds_ms": [round(1000 * value, 2) for value in values]} for layout, values in seconds.items()}
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["scripts/bench_layouts.py", *([shlex.join(given)] if given else [])])
    print(f"{args.batch} images of {args.size}x{args.size}, {args.threads} threads, median of {args.repeats} rounds")
    for layout, row in rows.items():
        print(f"  {layout:<22} {row['ms_per_batch']:8.1f} ms per batch  {row['images_per_s']:9,.0f} img/s  "
              f"x{row['times_uint8']:.2f} the uint8 time  (rounds {min(row['rounds_ms']):.1f}-"
              f"{max(row['rounds_ms']):.1f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "size": args.size, "batch": args.batch,
                                               "threads": args.threads, "repeats": args.repeats,
                                               "torch": torch.__version__,
                                               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                                               "layouts": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
