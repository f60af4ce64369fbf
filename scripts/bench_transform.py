"""Benchmark: torchvision AutoAugment (per image, PIL) against our PolicyTransform and BatchPolicyTransform.

All paths use the same images and the same policy (torchvision's CIFAR10 AutoAugment policy, converted).
Per-image tensors ([C, H, W] uint8, as after ``v2.ToImage()``) are measured too, ours against
torchvision's AutoAugment on the same tensors.
Each path's rate is also given as memory traffic against this machine's copy bandwidth (a large uint8
tensor copy on the same threads): an applied op reads and writes the image once at the least, so
``2 x image bytes x applied ops per image`` bytes per image. ``--profile`` adds the time share of the
planning step, the output copy and each op family of the batched path, at both sizes, and with more than
one thread each part's speed-up over one thread. Each path's minor page faults per image are counted too:
memory that the allocator returned to the system and touches again, which large batches pay for.
Run:  python scripts/bench_transform.py [--quick] [--json out.json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

try:
    import resource  # POSIX: page-fault counts
except ImportError:
    resource = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from policysearch.augment.policy import Policy  # noqa: E402
from policysearch.augment.torchvision_policies import from_torchvision  # noqa: E402
from policysearch.augment.image_transform import PolicyTransform  # noqa: E402
from policysearch.augment.transforms import BatchPolicyTransform  # noqa: E402

TARGETS = {  # name: (minimum ratio, description)
    "batch_cpu_vs_tv_32": (20.0, "batch CPU >= 20x torchvision per-image PIL at 32x32"),
    "batch_cpu_vs_tv_224": (3.0, "batch CPU >= 3x torchvision per-image PIL at 224x224"),
    "batch_cuda_vs_tv_224": (50.0, "batch GPU >= 50x torchvision per-image PIL at 224x224"),
    "pil_vs_tv_32": (1.2, "PolicyTransform PIL >= 1.2x torchvision (32x32)"),
    "pil_vs_tv_224": (1.2, "PolicyTransform PIL >= 1.2x torchvision (224x224)"),
}


# The torchvision path each of ours is compared with, in the same rounds (torchvision's own tensor path is
# compared with its PIL path).
REFERENCE = {"ours_pil": "tv_pil", "tv_tensor": "tv_pil", "ours_tensor": "tv_tensor", "batch_cpu": "tv_pil",
             "batch_cuda": "tv_pil"}
LABELS = {"tv_pil": "torchvision AutoAugment, PIL, per image", "ours_pil": "PolicyTransform, PIL, per image",
          "tv_tensor": "torchvision AutoAugment, tensor, per image",
          "ours_tensor": "PolicyTransform, tensor, per image",
          "batch_cpu": "BatchPolicyTransform, uint8 batch, CPU", "batch_cuda": "BatchPolicyTransform, uint8 batch, CUDA"}

ENV_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def make_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Real-looking RGB images [count, size, size, 3] uint8: sklearn digits upscaled, coloured, on gradients."""
    from sklearn.datasets import load_digits

    digits = load_digits().images  # 1797 x 8 x 8, 0..16
    rng = np.random.default_rng(seed)
    t = torch.from_numpy(digits[rng.integers(0, len(digits), count)] / 16.0).float().unsqueeze(1)
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        fg, bg1, bg2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        w = rng.uniform(0, 1)
        background = bg1 * (w * xx + (1 - w) * yy)[..., None] + bg2 * (1 - (w * xx + (1 - w) * yy))[..., None]
        out[i] = background * (1 - t[i, ..., None]) + fg * t[i, ..., None]
    out += rng.normal(0, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _minor_faults() -> int:
    """This process's minor page faults so far (0 where the platform does not count them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def _rounds(methods: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds per call of each method, interleaved: each round runs every method once, in turn; and the
    minor page faults of each call (memory the allocator gave back to the system and asks for again).

    On a shared machine the speed drifts over seconds; ratios taken within a round see the same drift, so
    the median of per-round ratios is far steadier than a ratio of separately timed blocks.
    """
    for fn in methods.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    faults: dict[str, list[int]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            before = _minor_faults()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            faults[name].append(_minor_faults() - before)
    return times, faults


def _figures(times: list[float], images: int, reference: list[float] | None = None, ref_images: int = 0) -> dict:
    best, median = min(times), statistics.median(times)
    out = {"images": images, "seconds": times, "best_img_s": images / best, "median_img_s": images / median}
    if reference is not None:  # per-round ratio of images per second against the reference method
        ratios = [(images / t) / (ref_images / r) for t, r in zip(times, reference)]
        out["round_ratios"] = ratios
        out["median_ratio"] = statistics.median(ratios)
    return out


def copy_bandwidth(repeats: int, megabytes: int = 256) -> dict:
    """Bytes read plus written per second by a large uint8 tensor copy into a buffer written before (no page
    faults), on the threads set for the run: the memory speed the transforms are measured against."""
    size = megabytes << 20
    src = torch.randint(0, 256, (size,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: every page of both written once
    seconds = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"bytes": size, "seconds": seconds, "median_bytes_s": 2 * size / median,
            "best_bytes_s": 2 * size / min(seconds)}


def applied_ops(policy: Policy) -> float:
    """Expected number of ops applied to an image: a sub-policy drawn uniformly, each op gated by its
    probability (Identity changes nothing and is not counted)."""
    return sum(step.prob for sub in policy for step in sub if step.op != "Identity") / len(policy)


def bench_size(size: int, count_pil: int, batches: int, repeats: int, batch_size: int, cuda: bool) -> dict:
    arrays = make_images(max(count_pil, batch_size * batches), size)
    pils = [Image.fromarray(a, "RGB") for a in arrays[:count_pil]]
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays[:count_pil]]
    tensor = torch.from_numpy(arrays[:batch_size * batches]).permute(0, 3, 1, 2).contiguous()
    policy = from_torchvision("cifar10")
    tv = AutoAugment(AutoAugmentPolicy.CIFAR10)
    ours = PolicyTransform(policy)
    batch = BatchPolicyTransform(policy)
    torch.manual_seed(0)
    chunks = tensor.split(batch_size)

    def run_batch(device):
        moved = [c.to(device) for c in chunks]
        module = batch.to(device)

        def go():
            for c in moved:
                module(c)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return go

    methods = {"tv_pil": lambda: [tv(p) for p in pils], "ours_pil": lambda: [ours(p) for p in pils],
               "tv_tensor": lambda: [tv(t) for t in tensors], "ours_tensor": lambda: [ours(t) for t in tensors],
               "batch_cpu": run_batch(torch.device("cpu"))}
    if cuda:
        methods["batch_cuda"] = run_batch(torch.device("cuda"))
    times, faults = _rounds(methods, repeats)
    counts = {name: len(tensor) if name.startswith("batch") else len(pils) for name in times}
    figures = {}
    for name, seconds in times.items():
        reference = REFERENCE.get(name)
        figures[name] = _figures(seconds, counts[name], times[reference] if reference else None, len(pils))
    for name, f in figures.items():
        f["minor_faults"] = faults[name]
        f["minor_faults_per_image"] = statistics.mean(faults[name]) / counts[name]  # mean: rare costly rounds count
    return figures


def _stage_name(stage, compiled: bool) -> str:
    """The family a stage of the batched path is counted in: an op run on its own, or a fused stage."""
    if len(stage) == 1:
        return stage[0].op.name + (" (compiled)" if compiled else "")
    return "geometric (fused)" if stage[0].op.matrix is not None else "tables (fused)"


def profile_ops(size: int, batch_size: int, repeats: int = 5) -> dict:
    """Seconds per batch of each part of ``BatchPolicyTransform.forward`` on CPU, summed over its stages:
    the planning step (``sample``), the copy of the input into the output and each op family (an op run on
    its own, or the fused geometric or table stages of several ops), each with its share of the total.
    A stage of compiled pixel ops (``cpu_kernels``) is timed op by op, one call each, where the transform
    makes one call for the stage: its ops' times include a few microseconds of overhead each."""
    from policysearch.augment.transforms import (TensorContext, _fill_tensor, _host_kernels, compiles,
                                                 has_compiled_kernel, new_batch, run_stage, stages)

    transform = BatchPolicyTransform(from_torchvision("cifar10"))
    batch = torch.from_numpy(make_images(batch_size, size, seed=1)).permute(0, 3, 1, 2).contiguous()
    totals: dict[str, float] = {}
    samples: dict[str, int] = {}

    def add(name: str, seconds: float, count: int = 0) -> None:
        totals[name] = totals.get(name, 0.0) + seconds
        samples[name] = samples.get(name, 0) + count

    transform(batch)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        plan = transform.sample(batch.shape)
        add("planning", time.perf_counter() - start)
        start = time.perf_counter()
        x = new_batch(batch.shape, batch.dtype, batch.device).copy_(batch)  # as BatchPolicyTransform.apply
        add("output copy", time.perf_counter() - start)
        ctx = TensorContext(exact=True, fill=_fill_tensor((0,), 3, x.device))
        compiled = compiles(x)
        for stage in stages(plan.steps, True, x[0].numel(), split=_host_kernels(x.device), compiled=compiled):
            one_call = compiled and has_compiled_kernel(stage[0].op)
            for part in [(step,) for step in stage] if one_call else [stage]:
                start = time.perf_counter()
                run_stage(x, part, ctx, compiled)  # includes selecting the samples and writing them back
                add(_stage_name(part, one_call), time.perf_counter() - start, sum(len(step.index) for step in part))
    total = sum(totals.values())
    order = sorted(totals, key=lambda name: -totals[name])
    return {"size": size, "batch_size": batch_size, "total_seconds_per_batch": total / repeats,
            "seconds_per_batch": {name: totals[name] / repeats for name in order},
            "share": {name: totals[name] / total for name in order},
            "us_per_sample": {name: totals[name] / samples[name] * 1e6 for name in order if samples[name]}}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _writable_parent(path: Path) -> bool:
    """Whether the folder that will hold ``path`` exists as a writable folder or can be made."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--repeats", type=_positive, default=None, help="interleaved rounds (default: 9; --quick: 2)")
    parser.add_argument("--batch-size", type=_positive, default=256)
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (smoke test)")
    parser.add_argument("--profile", action="store_true",
                        help="also time each part of the batched path: planning, output copy, each op family")
    parser.add_argument("--no-cuda", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.json is not None and (args.json.is_dir() or not _writable_parent(args.json)):
        parser.error(f"--json {args.json}: cannot write a file there")  # before minutes of measuring
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.no_cuda
    repeats = args.repeats or (2 if args.quick else 9)
    # size: (PIL images, batches) per round; each timing spans a few tenths of a second
    plan = {32: (200 if args.quick else 2000, 1 if args.quick else 64),
            224: (40 if args.quick else 500, 1 if args.quick else 4)}
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "pillow": PIL.__version__, "numpy": np.__version__}
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {"command": ["scripts/bench_transform.py", *argv], "versions": versions,
              "threads": torch.get_num_threads(), "device": torch.cuda.get_device_name(0) if cuda else "cpu only",
              "cpu": platform.processor() or platform.machine(), "batch_size": args.batch_size, "sizes": {},
              "ratios": {}, "targets": {}}
    bandwidth = copy_bandwidth(repeats)
    ops_per_image = applied_ops(from_torchvision("cifar10"))
    report["copy_bandwidth"] = bandwidth
    report["applied_ops_per_image"] = ops_per_image
    print(f"copy bandwidth (uint8 copy of {bandwidth['bytes'] >> 20} MiB, bytes read + written): "
          f"{bandwidth['median_bytes_s'] / 1e9:.1f} GB/s median; {ops_per_image:.3f} ops applied per image")
    for size, (count_pil, batches) in plan.items():
        figures = bench_size(size, count_pil, batches, repeats, args.batch_size, cuda)
        report["sizes"][str(size)] = figures
        image_traffic = 2 * 3 * size * size * ops_per_image  # bytes an image's ops read and write at the least
        for f in figures.values():
            f["traffic_bytes_per_image"] = image_traffic
            f["bandwidth_fraction"] = f["median_img_s"] * image_traffic / bandwidth["median_bytes_s"]
        for key, name in (("pil", "ours_pil"), ("batch_cpu", "batch_cpu"), ("batch_cuda", "batch_cuda"),
                          ("tensor", "ours_tensor")):
            if name in figures:  # ours_tensor against torchvision's tensor path; the others against its PIL path
                report["ratios"][f"{key}_vs_tv_{size}"] = figures[name]["median_ratio"]
        print(f"\n{size}x{size} RGB uint8  ({torch.get_num_threads()} threads, batch {args.batch_size}, "
              f"{repeats} interleaved rounds; traffic {image_traffic / 1e3:.1f} KB per image)")
        for key, label in LABELS.items():
            if key in figures:
                f = figures[key]
                against = "torchvision tensor" if REFERENCE.get(key) == "tv_tensor" else "torchvision PIL"
                ratio = f"  x{f['median_ratio']:6.2f} vs {against} (median of rounds, range " \
                        f"{min(f['round_ratios']):.2f}-{max(f['round_ratios']):.2f})" if key in REFERENCE else ""
                print(f"  {label:43s} best {f['best_img_s']:8.0f} img/s  median {f['median_img_s']:8.0f} img/s"
                      f"  {100 * f['bandwidth_fraction']:5.2f}% of copy bandwidth"
                      f"  {f['minor_faults_per_image']:6.2f} page faults per image{ratio}")
    print("\ntargets (ratio = our images/s over torchvision's in the same round, median of rounds):")
    for key, (minimum, text) in TARGETS.items():
        if key in report["ratios"]:
            ratio = report["ratios"][key]
            met = ratio >= minimum
            report["targets"][key] = {"target": minimum, "measured": ratio, "met": met, "text": text}
            print(f"  {'MET ' if met else 'MISS'} {text:62s} measured x{ratio:.2f}")
    if args.profile:
        profile_repeats = 2 if args.quick else 5
        report["profile"] = [profile_ops(size, args.batch_size, profile_repeats) for size in (32, 224)]
        # each part's speed-up from one thread: where the other threads help, where not (a rough guide: the
        # 1-thread profile runs after the other, not interleaved with it)
        if args.threads > 1:
            torch.set_num_threads(1)
            single = [profile_ops(size, args.batch_size, profile_repeats) for size in (32, 224)]
            torch.set_num_threads(args.threads)
            for prof, one in zip(report["profile"], single):
                prof["one_thread_seconds_per_batch"] = one["seconds_per_batch"]
                prof["thread_speedup"] = {name: one["seconds_per_batch"][name] / seconds for name, seconds
                                          in prof["seconds_per_batch"].items() if name in one["seconds_per_batch"]}
        for prof in report["profile"]:
            print(f"\ntime per part of the batched path, {prof['size']}x{prof['size']}, batch {prof['batch_size']} "
                  f"(total {prof['total_seconds_per_batch'] * 1e3:.1f} ms per batch):")
            for name, seconds in prof["seconds_per_batch"].items():
                per_sample = prof["us_per_sample"].get(name)
                each = f"  {per_sample:7.1f} us per sample" if per_sample is not None else ""
                speedup = prof.get("thread_speedup", {}).get(name)
                scaling = f"  x{speedup:.2f} from 1 thread" if speedup is not None else ""
                print(f"  {name:24s} {seconds * 1e3:8.2f} ms  {100 * prof['share'][name]:5.1f}%{each}{scaling}")
    # the machine's load (1, 5, 15 minute averages) at the start and the end: other processes on the
    # cores slow every path, and the OpenMP threads of the batched path the most
    report["load_average"] = {"start": load_start, "end": os.getloadavg() if load_start is not None else None}
    # the threading and allocator settings: glibc's malloc tunables and a preloaded allocator change how
    # often freed memory goes back to the system and faults in again, which the large batches feel
    report["env"] = {name: os.environ.get(name) for name in ENV_SETTINGS}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
