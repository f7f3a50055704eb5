"""Images/s of the training input pipeline, in all and per CPU core: is data feeding the bottleneck?

  python -m benchmarks.input_pipeline --cores=1 --batch=64 --res=224 --augment=inception_crop --json

Runs `vit_jax.input_pipeline.train_batches` (read, JPEG decode, inception crop or fine-tune crop,
flip, normalise, batch, device put) over an image folder: `--data_dir` (train/<class>/<image>), or by
default a temporary folder of JPEGs of ImageNet's typical size (about 500x375, cut from the photos
that ship inside scikit-learn and scikit-image), so it runs offline. `--source=fractal` or
`--source=contours` times the synthetic sources instead (vit_jax/synthetic: rendering replaces
reading and decoding; 1,000 categories, unlimited instances):
  python -m benchmarks.input_pipeline --source=fractal --res=32 --batch=256 --augment=central_crop `--cores` pins the process to
that many cores (before TensorFlow starts, so tf.data sizes its thread pool to them); images/s per
core is the total divided by the cores. Compare it with `benchmarks/throughput.py --mode=train` per
accelerator to see how many cores each accelerator needs.
"""

import argparse
import gc
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--source", choices=("image_folder", "fractal", "contours"),
                      default="image_folder", help="what to read: JPEGs, or a synthetic family")
  parser.add_argument("--num_categories", type=int, default=1000, help="synthetic sources only")
  parser.add_argument("--data_dir", default="", help="image folder; empty: synthetic JPEGs")
  parser.add_argument("--num_images", type=int, default=256, help="synthetic JPEGs to write")
  parser.add_argument("--image_size", default="500x375", help="synthetic JPEG width x height")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--res", type=int, default=224)
  parser.add_argument("--augment", default="inception_crop",
                      help="config.dataset.train_augment (vit_jax/preprocess.py)")
  parser.add_argument("--batches", type=int, default=10, help="timed batches per repeat")
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
  parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
  parser.add_argument("--cores", type=int, default=0, help="pin to this many cores; 0: all")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object on stdout (the summary line goes to stderr)")
  return parser.parse_args(argv)


def write_jpegs(root: pathlib.Path, num_images: int, width: int, height: int) -> None:
  """`root/train/<class>/*.jpg`: crops of real photos, so JPEG decoding costs what it does on
  natural images (random noise decodes slower, flat colour faster)."""
  import numpy as np
  from PIL import Image
  from sklearn.datasets import load_sample_image

  photos = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
  try:
    from skimage import data as skimage_data
    photos += [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()]
  except ImportError:
    pass
  rng = np.random.default_rng(0)
  for i in range(num_images):
    photo = Image.fromarray(photos[i % len(photos)])
    scale = rng.uniform(1.0, 1.5) * max(width / photo.width, height / photo.height)
    photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
    left = rng.integers(0, photo.width - width + 1)
    top = rng.integers(0, photo.height - height + 1)
    folder = root / "train" / f"class_{i % 10}"
    folder.mkdir(parents=True, exist_ok=True)
    photo.crop((left, top, left + width, top + height)).save(folder / f"{i}.jpg", quality=90)


def benchmark(args: argparse.Namespace) -> dict:
  if args.cores:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
  cores = len(os.sched_getaffinity(0))
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

  import jax  # After pinning: thread pools are sized to the cores this process may use.
  from configs import common
  from vit_jax import input_pipeline
  from vit_jax import sharding

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir
    if not data_dir and args.source == "image_folder":
      width, height = (int(v) for v in args.image_size.split("x"))
      write_jpegs(pathlib.Path(tmp), args.num_images, width, height)
      data_dir = tmp
    config = common.get_config()
    config.dataset.update(source=args.source, data_dir=data_dir, train_split="train",
                          eval_split="train", image_size=args.res, train_augment=args.augment,
                          num_classes=1000, shuffle_buffer=1024,
                          num_categories=args.num_categories)
    mesh = sharding.create_mesh(config.mesh)
    batches = input_pipeline.train_batches(
        config.dataset, global_batch_size=args.batch, seed=0, start_step=0,
        sharding=sharding.batch_sharding(mesh))
    for _ in range(args.warmup):
      jax.block_until_ready(next(batches))
    rates = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      for _ in range(args.batches):
        jax.block_until_ready(next(batches))
      rates.append(args.batches * args.batch / (time.perf_counter() - start))
    start = time.perf_counter()
    batches.close()  # Stops tf.data's readers before the temporary folder goes.
    close_seconds = time.perf_counter() - start
    del batches
    gc.collect()

  images_per_second = statistics.median(rates)
  return {"images_per_second": images_per_second, "images_per_second_per_core": images_per_second / cores,
          "images_per_second_runs": rates, "close_seconds": close_seconds, "cores": cores,
          "batch": args.batch, "res": args.res, "augment": args.augment,
          "source": (args.data_dir or f"synthetic JPEGs {args.image_size}"
                     if args.source == "image_folder" else f"{args.source}, rendered")}


def summary(r: dict) -> str:
  return (f"input pipeline ({r['augment']}, {r['source']}, batch {r['batch']}, res {r['res']}): "
          f"{r['images_per_second']:.1f} img/s on {r['cores']} cores = "
          f"{r['images_per_second_per_core']:.1f} img/s per core; closing the stream took "
          f"{r['close_seconds']:.2f} s")


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  result = benchmark(args)
  report.report(result, summary(result), as_json=args.json)


if __name__ == "__main__":
  main()
