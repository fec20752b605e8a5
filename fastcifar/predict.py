"""`python -m fastcifar.predict RUN_DIR IMAGE...`: the top classes of each image, with
probabilities. Images of any size are resized to 32x32 (CIFAR-10's size) first."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fastcifar.cli import Parser, positive_int, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m fastcifar.predict", description=__doc__)
    parser.add_argument("run_dir", help="run folder written by fastcifar.train")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top", type=positive_int, default=3, help="(default: %(default)s)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: auto)")
    return parser


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (32, 32, 3); a missing or non-image file raises one clear ValueError."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise ValueError(
            f"{path} is not an image file that Pillow can read (use PNG, JPEG, BMP, ...)"
        ) from None
    if rgb.size != (32, 32):
        rgb = rgb.resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def to_batch(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    from fastcifar.augmentation import CIFAR10_MEAN, CIFAR10_STD

    pixels = torch.from_numpy(np.stack(images)).to(device).float()
    normalised = (pixels - torch.tensor(CIFAR10_MEAN, device=device)) / torch.tensor(
        CIFAR10_STD, device=device
    )
    return normalised.permute(0, 3, 1, 2)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def run() -> None:
        from fastcifar.device import pick_device
        from fastcifar.run_folder import load_run

        images = [read_image(path) for path in args.images]  # refuse bad input before any work
        device = pick_device(args.device)
        model, summary = load_run(args.run_dir, device)
        names = summary["class_names"]
        probabilities = model.predict_proba(to_batch(images, device)).cpu()
        top = min(args.top, len(names))
        for path, row in zip(args.images, probabilities, strict=True):
            values, indices = row.topk(top)
            ranked = ", ".join(
                f"{names[i]} {100 * p:.1f}%" for p, i in zip(values, indices, strict=True)
            )
            print(f"{path}: {ranked}")

    run_main(run)


if __name__ == "__main__":
    main()
