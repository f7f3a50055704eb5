"""The command line: `python -m vit_jax.convert --from=timm --to=hf SRC DST` (see `vit_jax.convert`)."""

import argparse
import sys

from absl import logging
import jax
import numpy as np

from vit_jax import convert


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m vit_jax.convert", description="Convert ViT checkpoints between vit_jax, timm, "
      "Hugging Face and big_vision formats.")
  parser.add_argument("--from", dest="source_format", required=True, choices=convert.FORMATS)
  parser.add_argument("--to", dest="target_format", required=True, choices=convert.FORMATS)
  parser.add_argument("--num_heads", type=int, default=None,
                      help="attention heads (timm state dicts without a config.json)")
  parser.add_argument("src", help="weights file or the folder holding it")
  parser.add_argument("dst", help="file or folder to write")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  try:
    config, params = convert.load(args.src, args.source_format, num_heads=args.num_heads)
    written = convert.save(params, config, args.dst, args.target_format)
  except (ValueError, FileNotFoundError) as e:
    parser.exit(2, f"error: {e}\n")
  count = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
  print(f"Wrote {written} ({args.source_format} -> {args.target_format}): {count:,} parameters, "
        f"{config.transformer.num_layers} blocks, width {config.hidden_size}, "
        f"{config.transformer.num_heads} heads, classifier {config.classifier}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
