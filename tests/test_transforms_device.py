"""BatchPolicyTransform on a device: `.to(device)`, the per-device table cache, and the kernels that keep a
batch on an accelerator (precomputed warp sources, Blur by mask, no bincount), which must give exactly what
the host kernels give. The CPU runs the accelerator kernels here by choosing them explicitly; the CUDA
tests skip without a GPU."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from _images import natural_batch
from policysearch.augment import transforms
from policysearch.augment.ops import OPS
from policysearch.augment.warp import gather_warp, warp, warp_index
from policysearch.augment.policy import Operation, Policy
from policysearch.augment.transforms import BatchPolicyTransform

ALL_OPS = sorted(OPS)
# Every op in both slots, at levels that are neither 0 nor 1, and two Blur radii.
POLICY = Policy([[Operation(a, 0.8, 0.6), Operation(b, 0.8, 0.9)] for a, b in zip(ALL_OPS, ALL_OPS[3:] + ALL_OPS[:3])]
                + [[Operation("Blur", 1.0, 0.3), Operation("Rotate", 0.9, 1.0)]])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("size", [(32, 32), (13, 20)])
def test_accelerator_kernels_give_the_host_kernels_results(monkeypatch, dtype, size):
    batch = natural_batch(96, *size, 3, seed=4)
    batch = batch if dtype == torch.uint8 else batch.to(dtype) / 255.0
    host = BatchPolicyTransform(POLICY)(batch, generator=_gen(7))
    monkeypatch.setattr(transforms, "_host_kernels", lambda device: False)
    transform = BatchPolicyTransform(POLICY)
    plan = transform.sample(batch.shape, generator=_gen(7))
    geometric = [step for step in plan.steps if step.op.matrix is not None]
    assert geometric and all(step.source is not None for step in geometric)
    assert all("radii" in step.draw for step in plan.steps if step.op.name == "Blur")
    assert torch.equal(transform.apply(batch, plan), host)


def test_warp_sources_pick_the_pixels_warp_picks():
    """Rotations, shears, zooms and shifts (separable or not, mixed in one call) at an odd size."""
    torch.manual_seed(0)
    n, h, w = 40, 11, 17
    angle = torch.rand(n, dtype=torch.float64) * 2 - 1
    matrix = torch.stack([torch.cos(angle), torch.sin(angle) * (torch.arange(n) % 2), torch.randn(n, dtype=torch.float64),
                          -torch.sin(angle) * (torch.arange(n) % 2), 1 + angle / 3, torch.randn(n, dtype=torch.float64) * 4],
                         dim=1)
    matrix[::4, 2] = torch.round(matrix[::4, 2])
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    fill = torch.tensor([10.0, 20.0, 30.0])
    assert torch.equal(gather_warp(x, warp_index(matrix, h, w), fill), warp(x, matrix, fill))


def test_to_moves_the_tables_once_and_sets_the_default_device():
    transform = BatchPolicyTransform(POLICY)
    assert transform.device == torch.device("cpu")
    assert transform.to("cpu") is transform
    first = transform._tables(torch.device("cpu"))
    transform.sample((4, 3, 8, 8), generator=_gen(0))
    assert transform._tables(torch.device("cpu")) is first, "the tables are uploaded once per device"
    assert transform.to("meta") is transform and transform.device == torch.device("meta")
    meta = transform._tables(torch.device("meta"))
    assert {t.device.type for t in (meta["op"], meta["arg"], meta["entry_tables"])} == {"meta"}
    assert meta["arg"].dtype == torch.float64
    transform.to(torch.float16)  # a dtype alone changes neither the device nor the float64 arguments
    assert transform.device == torch.device("meta") and transform._tables(torch.device("meta"))["arg"].dtype == torch.float64
    copy = pickle.loads(pickle.dumps(transform))
    assert copy.device == torch.device("cpu") and copy._on_device == {}
    batch = natural_batch(8, 8, 8, 3, seed=1)
    assert torch.equal(copy(batch, generator=_gen(3)), BatchPolicyTransform(POLICY)(batch, generator=_gen(3)))


def test_a_drawn_plan_is_marked_and_a_copy_built_by_hand_is_checked():
    transform = BatchPolicyTransform(POLICY)
    plan = transform.sample((16, 3, 8, 8), generator=_gen(1))
    assert plan.drawn
    step = plan.steps[0]
    twice = dataclasses.replace(plan, steps=(step, step), drawn=False)
    with pytest.raises(ValueError, match=f"slot {step.slot} has more than one step for sample"):
        transform.apply(natural_batch(16, 8, 8, 3, seed=2), twice)


@needs_cuda
def test_readme_usage_on_cuda_keeps_everything_on_the_device():
    """`BatchPolicyTransform(policy).to("cuda")` with a CUDA generator, as the README shows; applying a
    drawn plan never waits for the GPU, and gives what the CPU gives for the same draws."""
    augment = BatchPolicyTransform(POLICY).to("cuda")
    assert augment.device.type == "cuda" and augment._tables(augment.device)["op"].is_cuda
    batch = natural_batch(256, 32, 32, 3, seed=5)
    images = batch.cuda()
    out = augment(images, generator=_gen(0, "cuda"))
    assert out.is_cuda and out.dtype == torch.uint8 and out.shape == images.shape
    plan = augment.sample(images.shape, generator=_gen(1, "cuda"))
    augment.apply(images, plan)  # first use on this device: fill colours are uploaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = augment.apply(images, plan)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    def host(v):
        return None if v is None else v.cpu()

    on_cpu = dataclasses.replace(plan, sub_policy=plan.sub_policy.cpu(), steps=tuple(
        dataclasses.replace(s, index=s.index.cpu(), arg=s.arg.cpu(), matrix=host(s.matrix), table=host(s.table),
                            source=None, draw={k: v.cpu() for k, v in s.draw.items()}) for s in plan.steps))
    cpu = BatchPolicyTransform(POLICY).apply(batch, on_cpu)
    # Float arithmetic (noise, Sharpness) may round differently on the GPU: a pixel in a thousand at most.
    assert float((gpu.cpu() != cpu).float().mean()) < 1e-3


def test_a_device_that_fails_leaves_the_transform_where_it_was_and_cuda_is_to_cuda():
    """Regression: a failed ``.to("cuda:0")`` left the transform drawing on CUDA, and ``.cuda()`` did nothing."""
    transform = BatchPolicyTransform("torchvision:cifar10")
    if torch.cuda.is_available():
        assert transform.cuda().device.type == "cuda" and transform.cpu().device == torch.device("cpu")
        return
    for move in (lambda: transform.to("cuda:0"), lambda: transform.to(0), transform.cuda, lambda: transform.cuda(0)):
        with pytest.raises((RuntimeError, AssertionError)):  # AssertionError: torch built without CUDA
            move()
        assert transform.device == torch.device("cpu")
    assert transform.sample((2, 3, 8, 8)).sub_policy.device == torch.device("cpu")
    assert transform.to("meta").cpu().device == torch.device("cpu")


def test_cpu_images_ignore_the_default_device():
    """Regression: ``torch.set_default_device("cuda")`` (here its stand-in, the meta device) moved the PIL
    path's draws, the tables built per image size and Cutout's centre off the CPU: they failed with "Cannot
    copy out of meta tensor" (on CUDA, a generator on another device) for images on the CPU."""
    from policysearch.augment.image_transform import PolicyTransform
    from policysearch.augment.transforms import Cutout
    from _images import natural_pil

    image, batch = natural_pil(9, 11, seed=3), natural_batch(3, 9, 11)
    single = Policy([sub for sub in POLICY if all(step.op != "SamplePairing" for step in sub)])  # no pool needed
    cases = {"pil": lambda: PolicyTransform(single, generator=_gen(1))(image),
             "tensor": lambda: PolicyTransform(single, generator=_gen(1))(batch[0]),
             "batch": lambda: BatchPolicyTransform(POLICY)(batch, _gen(1)),
             "cutout pil": lambda: Cutout(4, generator=_gen(1))(image),
             "cutout batch": lambda: Cutout(4, generator=_gen(1))(batch)}
    expected = {name: make() for name, make in cases.items()}
    for name, make in cases.items():
        with torch.device("meta"):
            out = make()
        assert out.tobytes() == expected[name].tobytes() if name.endswith("pil") else torch.equal(out, expected[name]), name


def test_threads_sharing_a_transform_on_images_of_many_sizes_get_each_size_right():
    """Regression: the per-size tables were checked, replaced and read back in separate steps, so a thread
    could read another size's tables: a shape error, or (sizes of the same pixel count) silently wrong
    pixels. Every thread's output equals the one-thread output."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    policy = Policy([[Operation("Rotate", 1.0, 0.7)], [Operation("ShearX", 1.0, 0.4), Operation("Invert", 0.5, 0.0)]])
    shared = BatchPolicyTransform(policy)
    sizes = [(24, 40), (40, 24), (9, 30), (30, 9), (12, 80), (80, 12)] * 40
    images = [natural_batch(2, h, w, seed=k) for k, (h, w) in enumerate(sizes)]
    expected = [BatchPolicyTransform(policy)(x, _gen(k)) for k, x in enumerate(images)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to meet the race if there is one
    try:
        with ThreadPoolExecutor(4) as pool:
            outputs = list(pool.map(lambda k: shared(images[k], _gen(k)), range(len(images))))
    finally:
        sys.setswitchinterval(interval)
    wrong = [sizes[k] for k, (out, want) in enumerate(zip(outputs, expected)) if not torch.equal(out, want)]
    assert not wrong, f"{len(wrong)} of {len(sizes)} outputs differ from one thread's: {wrong[:3]}"


def test_a_plan_for_images_without_pixels_is_drawn_and_applied():
    """Regression: ``sample`` of a batch of several images with no pixels failed inside numpy."""
    transform = BatchPolicyTransform(POLICY)
    for shape in ((2, 3, 0, 4), (3, 1, 5, 0)):
        plan = transform.sample(shape, generator=_gen(0))
        assert transform.apply(torch.zeros(shape, dtype=torch.uint8), plan).shape == shape
