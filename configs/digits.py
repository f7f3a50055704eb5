"""The embedded default: a small ViT trained on scikit-learn's 1,797 real 8x8 handwritten digits.

No download, CPU-sized. Run:
  python -m vit_jax.main --config=configs/digits.py --workdir=runs/digits
Reaches >= 97% test accuracy on the 300 held-out digits (see README for the measured figure and time).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.get_config()
  config.model.model_name = "ViT-digits"
  config.model.patches.size = (4, 4)
  config.model.hidden_size = 64
  config.model.transformer.update(mlp_dim=128, num_heads=4, num_layers=4, dropout_rate=0.0)
  config.model.classifier = "gap"

  config.dataset.source = "digits"
  config.dataset.num_classes = 10
  config.dataset.image_size = 16  # upsampled, so that train crops and eval views match
  config.dataset.train_augment = "squash_crop"  # 1-pixel random shifts
  config.dataset.random_flip = False
  config.dataset.shuffle_buffer = 2_000

  config.batch_size = 128
  config.eval_batch_size = 300
  config.total_steps = 600
  config.optimizer.update(learning_rate=2e-3, warmup_steps=50, weight_decay=0.05)
  config.loss.label_smoothing = 0.1
  config.log_every = 100
  config.eval_every = 300
  config.checkpoint_every = 300
  return config
