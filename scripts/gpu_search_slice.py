"""A short slice of a reduced-CIFAR-10 search with WRN-40-2, on one GPU, without Ray: how many images per
second each phase processes and what fraction of the time the GPU waits on the host.

Phase 1 (child training): `train.train_model` on D_M with the CIFAR baseline augmentation. Phase 2 (policy
scoring): `density.evaluate_policy` of random candidate policies on D_A with the frozen child. The GPU's
busy time comes from the profiler (the union of its kernel intervals over a window of each phase, the
window's first step excluded); the wait fraction is 1 - busy / wall. The profiler adds host time of its
own, so the wait fraction it reports is an upper bound.

Data: `imagefolder:` CIFAR-10 images from --data (default: shared/data/cifar10-dev, if present), else random
uint8 images of CIFAR's shape; the JSON says which. Everything is written to OUT/gpu_search_slice.json
(OUT: --out, else $OUT, else runs/gpu-slice).

Run:  python scripts/gpu_search_slice.py [--out DIR] [--epochs 3] [--candidates 8]
      python scripts/gpu_search_slice.py --dry-run   # CPU, tiny sizes: checks the script, measures nothing real
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from policysearch.arguments import whole_number  # noqa: E402
from policysearch.augment.ops import OPS  # noqa: E402
from policysearch.augment.policy import Operation, Policy  # noqa: E402
from policysearch.search.density import evaluate_policy  # noqa: E402
from policysearch.training.data import ImageData, baseline_for, load_dataset, normalization_for  # noqa: E402
from policysearch.training.models import build_model  # noqa: E402
from policysearch.training.train import TrainConfig, train_model  # noqa: E402

DEFAULT_DATA = (ROOT / "shared" / "data" / "cifar10-dev", ROOT.parent / "shared" / "data" / "cifar10-dev",
                Path("/work/shared/data/cifar10-dev"))
CANDIDATE_OPS = [name for name in OPS if name not in ("Identity", "SamplePairing")]


def load_data(path: Path | None, size: int, seed: int) -> tuple[ImageData, str]:
    """CIFAR-10 images from an image folder, or random CIFAR-shaped ones when there is none."""
    candidates = [path] if path is not None else list(DEFAULT_DATA)
    for folder in candidates:
        if folder is not None and (folder / "train").is_dir():
            data = load_dataset(f"imagefolder:{folder}", "train")
            # shuffled: the folder lists the images class by class, and D_M and D_A are its two parts
            data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size])
            return data, f"imagefolder:{folder} ({len(data)} real CIFAR-10 images)"
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (size,), generator=gen)
    where = ", ".join(str(p) for p in candidates if p is not None)
    return (ImageData(images, labels, tuple(f"class{k}" for k in range(10)), "random"),
            f"random uint8 images of CIFAR-10's shape ({size}); no image folder found at {where}")


def random_policies(count: int, seed: int, subs: int = 5, ops: int = 2) -> list[Policy]:
    """Candidates as phase 2 draws them: sub-policies of random ops, probabilities and levels."""
    rng = np.random.default_rng(seed)
    return [Policy([[Operation(str(rng.choice(CANDIDATE_OPS)), float(rng.uniform()), float(rng.uniform()))
                     for _ in range(ops)] for _ in range(subs)]) for _ in range(count)]


def busy_fraction(run, device: torch.device) -> dict:
    """Wall seconds of ``run()`` and, on CUDA, the share of it the GPU spends in kernels (profiler)."""
    if device.type != "cuda":
        start = time.perf_counter()
        run()
        return {"wall_s": time.perf_counter() - start, "gpu_busy_fraction": None, "gpu_wait_fraction": None,
                "note": "no GPU: the wait fraction needs CUDA"}
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
    busy, reach = 0.0, None
    for begin, end in intervals:  # union of kernel intervals, in microseconds
        if reach is None or begin > reach:
            busy += end - begin
            reach = end
        elif end > reach:
            busy += end - reach
            reach = end
    fraction = min(busy / 1e6 / wall, 1.0) if wall > 0 else None
    return {"wall_s": wall, "gpu_busy_fraction": fraction, "gpu_wait_fraction": None if fraction is None else 1 - fraction,
            "kernels": len(intervals)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else runs/gpu-slice)")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 image folder with train/<class>/*.jpg")
    parser.add_argument("--train-size", type=whole_number, default=4000, help="images: 60%% D_M (phase 1), 40%% D_A (phase 2)")
    parser.add_argument("--model", default="wrn40_2")
    parser.add_argument("--epochs", type=whole_number, default=3, help="phase 1 epochs (the first is warm-up)")
    parser.add_argument("--batch-size", type=whole_number, default=128)
    parser.add_argument("--candidates", type=whole_number, default=8, help="phase 2 policies scored (the first is warm-up)")
    parser.add_argument("--num-views", type=whole_number, default=5)
    parser.add_argument("--seed", type=whole_number, default=0)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: a check of the script itself")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.train_size, args.epochs, args.candidates, args.num_views = 40, 2, 2, 2
        args.batch_size = min(args.batch_size, 8)
    out = args.out or Path(os.environ.get("OUT") or ROOT / "runs" / "gpu-slice")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    data, source = load_data(args.data, args.train_size, args.seed)
    split = int(len(data) * 0.6)
    d_m, d_a = data.subset(torch.arange(split)), data.subset(torch.arange(split, len(data)))
    mean, std = normalization_for("cifar10")
    model = build_model(args.model, 10)
    report: dict = {"command": ["scripts/gpu_search_slice.py", *(sys.argv[1:] if argv is None else argv)],
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "dry_run": args.dry_run, "data": source, "model": args.model, "d_m": len(d_m), "d_a": len(d_a),
                    "versions": {"python": platform.python_version(), "torch": torch.__version__}}
    print(f"device {report['device']}; data: {source}")

    # Phase 1: the first epoch warms up (cuDNN autotuning, allocator); the rest are timed and profiled.
    epochs: list[dict] = []
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=0.05, seed=args.seed)
    baseline = baseline_for("cifar10", 32)

    def train(epochs_to_run: int) -> None:
        for _ in range(epochs_to_run):
            train_model(model, d_m, config, baseline=baseline, mean=mean, std=std, device=device,
                        on_epoch=lambda epoch, metrics: epochs.append(metrics))

    train(1)
    timed = busy_fraction(lambda: train(args.epochs - 1), device)
    trained = (args.epochs - 1) * len(d_m)
    report["phase1"] = {"what": "child training (train_model, baseline augmentation, AMP on CUDA)",
                        "epochs_timed": args.epochs - 1, "images": trained, "img_per_s": trained / timed["wall_s"],
                        "warmup_epoch_s": epochs[0]["seconds"], **timed}
    print(f"phase 1: {report['phase1']['img_per_s']:.0f} img/s, GPU waits {timed['gpu_wait_fraction']}")

    # Phase 2: frozen child, D_A on the device once, a seeded generator there, as a search trial does.
    images, labels = d_a.images.to(device), d_a.labels.to(device)
    policies = random_policies(args.candidates, args.seed)
    generator = torch.Generator(device=device)
    scores = []

    def score(chosen: list[Policy]) -> None:
        for policy in chosen:
            generator.manual_seed(args.seed)
            scores.append(evaluate_policy(model, images, labels, policy, mean=mean, std=std,
                                          num_views=args.num_views, batch_size=1024, generator=generator).accuracy)

    score(policies[:1])
    timed = busy_fraction(lambda: score(policies[1:]), device)
    scored = (args.candidates - 1) * len(d_a) * args.num_views
    report["phase2"] = {"what": "policy scoring (evaluate_policy: batched transform + frozen model, bf16 on CUDA)",
                        "candidates_timed": args.candidates - 1, "views": args.num_views, "images": scored,
                        "img_per_s": scored / timed["wall_s"], "policy_per_s": (args.candidates - 1) / timed["wall_s"],
                        "accuracies": scores, **timed}
    print(f"phase 2: {report['phase2']['img_per_s']:.0f} img/s ({report['phase2']['policy_per_s']:.2f} policies/s), "
          f"GPU waits {timed['gpu_wait_fraction']}")
    path = out / "gpu_search_slice.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
