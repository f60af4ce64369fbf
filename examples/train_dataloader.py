"""Train a small classifier with a policy inside a torchvision ``DataLoader`` pipeline (per image, PIL).

The data is scikit-learn's digits (1,797 8 x 8 grey images, shipped with scikit-learn, no download),
upscaled to 32 x 32 PIL images. ``PolicyTransform`` takes a policy file or a policy string and sits in
``transforms.Compose`` like any torchvision transform; with ``--workers`` it runs in the loader's
worker processes.

    python examples/train_dataloader.py --policy randaugment:n=1,m=5
    python examples/train_dataloader.py --policy runs/demo-DATE/policy.json --workers 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from policysearch import PolicyError, PolicyTransform


class Digits(Dataset):
    """scikit-learn's digits as ``size`` x ``size`` grey PIL images, through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, transform) -> None:
        pixels = (images.reshape(-1, 8, 8) * (255 / 16)).round().astype(np.uint8)  # values 0..16 -> 0..255
        self.images = [Image.fromarray(p, "L").resize((size, size), Image.Resampling.BILINEAR) for p in pixels]
        self.labels = torch.as_tensor(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def small_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, classes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--policy", default="randaugment:n=1,m=5",
                        help="policy file or policy string")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs")
    parser.add_argument("--steps", type=int, default=None, help="stop each epoch after this many batches; None: all")
    parser.add_argument("--train-size", type=int, default=1000, help="training images; the rest are the test set")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the model and the augmentation")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    train_idx, test_idx = order[:args.train_size], order[args.train_size:]
    to_tensor = [transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float32),
                 transforms.Normalize([0.5], [0.5])]
    try:
        policy = PolicyTransform(args.policy)
    except PolicyError as exc:  # a bad file or string: one line naming what is wrong
        parser.error(str(exc))
    train_tf = transforms.Compose([policy, *to_tensor])  # the policy, per image
    test_tf = transforms.Compose(to_tensor)
    train = Digits(digits.images[train_idx], digits.target[train_idx], args.size, train_tf)
    test = Digits(digits.images[test_idx], digits.target[test_idx], args.size, test_tf)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    print(f"policy {train_tf.transforms[0].policy.name or args.policy}: {len(train)} training images, "
          f"{len(test)} test images")

    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    # the learning rate decays to 0: BatchNorm's running statistics then match the final weights
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    for epoch in range(args.epochs):
        model.train()
        total, count = 0.0, 0
        for step, (images, labels) in enumerate(loader):
            if args.steps is not None and step >= args.steps:
                break
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        schedule.step()
        print(f"epoch {epoch + 1}: train loss {total / max(count, 1):.3f} over {count} images")

    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(test, batch_size=256))
    print(f"test accuracy {correct / len(test):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
