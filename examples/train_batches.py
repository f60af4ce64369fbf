"""Augment whole batches on the training device with ``BatchPolicyTransform`` inside a training loop.

The data (scikit-learn's digits at 32 x 32, no download) lives as one uint8 tensor on the device. Each
step takes a batch, and ``BatchPolicyTransform`` applies the policy to it in place of a per-image
pipeline: every sample draws its own sub-policy, probabilities and arguments, with no Python loop over
samples, on the CPU or the GPU. A seeded generator makes the augmentation repeatable.

    python examples/train_batches.py --policy trivialaugment
    python examples/train_batches.py --policy runs/demo-DATE/policy.json --device cuda
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

from policysearch import BatchPolicyTransform, PolicyError


def digits_tensor(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as uint8 images [N, 1, size, size] and labels [N]."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) * (255 / 16)
    images = nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8), torch.as_tensor(digits.target)


def small_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, classes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", default="trivialaugment", help="policy file or policy string")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs")
    parser.add_argument("--steps", type=int, default=None, help="stop each epoch after this many batches; None: all")
    parser.add_argument("--train-size", type=int, default=1000, help="training images; the rest are the test set")
    parser.add_argument("--batch-size", type=int, default=128, help="images per training step")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the batches are augmented and the model trains")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the model and the augmentation")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        parser.error(f"--device {args.device}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 first")
    torch.manual_seed(args.seed)

    images, labels = digits_tensor(args.size)
    order = torch.randperm(len(labels))
    train_x, train_y = images[order[:args.train_size]].to(device), labels[order[:args.train_size]].to(device)
    test_x, test_y = images[order[args.train_size:]].to(device), labels[order[args.train_size:]].to(device)

    try:
        augment = BatchPolicyTransform(args.policy).to(device)
    except PolicyError as exc:  # a bad file or string: one line naming what is wrong
        parser.error(str(exc))
    generator = torch.Generator(device).manual_seed(args.seed)  # on the batch's device
    subs = f"{len(augment.policy)} sub-polic{'y' if len(augment.policy) == 1 else 'ies'}"
    print(f"policy {augment.policy.name or args.policy}: {subs}, "
          f"{len(train_y)} training images on {device}")

    def normalise(batch: torch.Tensor) -> torch.Tensor:
        return (batch.float() / 255 - 0.5) / 0.5

    model = small_cnn().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    # the learning rate decays to 0: BatchNorm's running statistics then match the final weights
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    for epoch in range(args.epochs):
        model.train()
        total, count = 0.0, 0
        perm = torch.randperm(len(train_y), device=device)
        for step, start in enumerate(range(0, len(perm), args.batch_size)):
            if args.steps is not None and step >= args.steps:
                break
            index = perm[start:start + args.batch_size]
            batch = augment(train_x[index], generator=generator)  # uint8 in, uint8 out, per sample
            loss = nn.functional.cross_entropy(model(normalise(batch)), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(index), count + len(index)
        schedule.step()
        print(f"epoch {epoch + 1}: train loss {total / max(count, 1):.3f} over {count} images")

    model.eval()
    with torch.no_grad():
        accuracy = float((model(normalise(test_x)).argmax(1) == test_y).float().mean())
    print(f"test accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
