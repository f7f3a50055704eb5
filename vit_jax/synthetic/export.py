"""Writes a synthetic data set as an image folder, for other codebases (or `source=image_folder`).

  python -m vit_jax.synthetic.export --family=fractal --num_categories=1000 \
      --instances_per_category=1000 --image_size=224 --output_dir=data/fractaldb_1k

Gives OUTPUT_DIR/{train,test}/<category, 5 digits>/<instance, 6 digits>.png: the very images the
`fractal` / `contours` sources render for the same settings (the test split holds the held-out
instances that source evaluates on).
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

from vit_jax.synthetic import generate
from vit_jax.synthetic import source

_BATCH = 256


def export(family: str, num_categories: int, instances: dict[str, int], image_size: int,
           output_dir: pathlib.Path, *, data_seed: int = 0, colour: bool = True) -> int:
  """Writes instances[split] images per category of each split; returns how many it wrote."""
  table = generate.category_table(family, data_seed, num_categories)
  written = 0
  for split, count in instances.items():
    offset = source.EVAL_INSTANCE_OFFSET if split == "test" else 0
    indices = np.arange(num_categories * count)
    for start in range(0, len(indices), _BATCH):
      batch = indices[start:start + _BATCH]
      categories, numbers = batch % num_categories, batch // num_categories
      images = generate.render(family, table, categories, numbers + offset, data_seed, image_size,
                             colour)
      for image, category, number in zip(images, categories, numbers):
        folder = output_dir / split / f"{category:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{number:06d}.png")
      written += len(batch)
  return written


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--family", choices=sorted(generate.FAMILIES), default="fractal")
  parser.add_argument("--num_categories", type=int, default=1000)
  parser.add_argument("--instances_per_category", type=int, default=1000)
  parser.add_argument("--eval_instances_per_category", type=int, default=10)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--data_seed", type=int, default=0)
  parser.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--output_dir", required=True)
  args = parser.parse_args(argv)
  count = export(args.family, args.num_categories,
                 {"train": args.instances_per_category, "test": args.eval_instances_per_category},
                 args.image_size, pathlib.Path(args.output_dir), data_seed=args.data_seed,
                 colour=args.colour)
  print(f"Wrote {count} images to {args.output_dir}")


if __name__ == "__main__":
  main()
