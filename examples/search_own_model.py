"""Search a training recipe for your own model on your own data from Python, then train with it.

``TinyNet`` below stands for your network: ``policysearch.search`` gets a function that builds a fresh
one for a class count and a channel count, and Ray sends that function to its workers. The data is
scikit-learn's digits (shipped with scikit-learn, no download) as 16 x 16 grey PIL images, given first
as a ``torch.utils.data.Dataset`` and then as a Hugging Face dataset built here with
``datasets.Dataset.from_dict`` (skipped with a note when ``datasets`` is not installed). After each
search the model trains with the chosen recipe (``result.batch_transform()``) and is tested on
held-out digits.

    python examples/search_own_model.py                 # both searches, about a minute each on 2 CPU cores
    python examples/search_own_model.py --source torch --trials 20 --epochs 20
    python examples/search_own_model.py --quick         # tiny settings, to check that it runs (the tests)
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

import policysearch

SIZE = 16
# How train_with trains; the search is told the same, so that it chooses the recipe for this training.
TRAINING = dict(batch_size=64, lr=0.05)
# Settings of a smoke run: about half a minute per search on 2 CPU cores, meaningless as a recipe.
QUICK = dict(train_size=100, splits=2, trials=2, epochs=1, top_n=1, num_views=1, min_steps=8, selection_folds=2,
             selection_keep=0.1, strengths=(1.0,))


class TinyNet(nn.Module):
    """Your model: anything that maps [B, in_channels, H, W] images to [B, num_classes] logits."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class DigitImages(Dataset):
    """Your data set: ``(PIL image, int label)`` items, the way a torchvision data set returns them."""

    def __init__(self, images: list[Image.Image], labels: list[int]) -> None:
        self.images, self.labels = images, labels
        self.classes = [str(c) for c in range(10)]  # optional: class names for the report

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.images[i], self.labels[i]


def digits(seed: int) -> tuple[DigitImages, DigitImages]:
    """scikit-learn's digits as 16 x 16 grey PIL images: 1,200 to search and train on, the rest to test."""
    bunch = load_digits()
    pixels = (bunch.images * (255 / 16)).round().astype(np.uint8)
    images = [Image.fromarray(p, "L").resize((SIZE, SIZE), Image.Resampling.BILINEAR) for p in pixels]
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:1200], order[1200:]
    return (DigitImages([images[i] for i in train], [int(bunch.target[i]) for i in train]),
            DigitImages([images[i] for i in test], [int(bunch.target[i]) for i in test]))


def hugging_face(data: DigitImages):
    """The same images as a Hugging Face dataset, built in memory (None when ``datasets`` is not installed)."""
    try:
        import datasets
    except ImportError:
        return None
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=data.classes)})
    return datasets.Dataset.from_dict({"image": data.images, "label": data.labels}, features=features)


def as_tensors(data: DigitImages) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([np.asarray(img) for img in data.images]))[:, None]  # uint8 [N, 1, H, W]
    return images, torch.tensor(data.labels)


def train_with(result, train: DigitImages, test: DigitImages, epochs: int, seed: int) -> float:
    """Train a fresh TinyNet with the searched recipe on whole uint8 batches; its test accuracy."""
    torch.manual_seed(seed)
    model = TinyNet(10, 1)
    augment = result.batch_transform()  # the recipe: its sub-policies, then its pad-and-crop and flip
    generator = torch.Generator().manual_seed(seed)
    images, labels = as_tensors(train)
    mean, std = images.float().mean() / 255, images.float().std() / 255

    def normalise(batch: torch.Tensor) -> torch.Tensor:
        return (batch.float() / 255 - mean) / std

    optimizer = torch.optim.SGD(model.parameters(), lr=TRAINING["lr"], momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(images), generator=generator).split(TRAINING["batch_size"]):
            batch = augment(images[index], generator)
            loss = nn.functional.cross_entropy(model(normalise(batch)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_images, test_labels = as_tensors(test)
    model.eval()
    with torch.no_grad():
        return float((model(normalise(test_images)).argmax(1) == test_labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", choices=("torch", "hf", "both"), default="both",
                        help="search on the torch Dataset, the Hugging Face dataset, or both")
    parser.add_argument("--trials", type=int, default=10, help="policy trials per split")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the child models and the final training")
    parser.add_argument("--quick", action="store_true", help="tiny settings that only check that the script runs")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs; None: runs/own-model-TIME")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search")
    args = parser.parse_args(argv)
    out = args.out or Path("runs") / f"own-model-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    settings = {**TRAINING, **(QUICK if args.quick else dict(trials=args.trials, epochs=args.epochs, splits=3))}
    train, test = digits(args.seed)

    sources = {"torch": lambda: train, "hf": lambda: hugging_face(train)}
    for source in (("torch", "hf") if args.source == "both" else (args.source,)):
        data = sources[source]()
        if data is None:
            print("hf: skipped, the Hugging Face part needs `pip install datasets`")
            continue
        # TinyNet itself is the callable: TinyNet(num_classes, in_channels) builds a fresh model. The search
        # prints its progress and, at the end, the recipe, why, and where policy.json is.
        result = policysearch.search(data, model=TinyNet, out=out / source, seed=args.seed, **settings)
        accuracy = train_with(result, train, test, settings["epochs"], args.seed)
        print(f"{source}: trained {settings['epochs']} epoch(s) with it: test accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
