"""VTAB-1k: 19 tasks of 1,000 training images each, from a published ImageNet-21k ViT (recipe.py).

  python -m vit_jax.main --config=configs/transfer/vtab.py:caltech101 --workdir=runs/vtab-caltech101
  python -m vit_jax.main --config=configs/transfer/vtab.py:eurosat,ViT-B_16,224 \
      --workdir=runs/vtab-eurosat-b16
Config arg: TASK[,MODEL[,RESOLUTION]], model ViT-L_16 by default (the one whose per-task results the
paper publishes for ImageNet-21k pre-training). The paper's protocol (App. B.1.1, Table 4): one setting
for every task, learning rate 0.01, 2,500 steps at batch 512, resolution 384 (no task-specific resolution), images
only resized (no task-dependent augmentation): as the VTAB package, every image, for training and for
evaluation, is squashed whole to the resolution (`train_augment` and `eval_preprocess` "resize", no flip),
so a KITTI or CLEVR frame is never cropped. dSprites' 0/1 pixels are scaled to 0/255 by the data source,
as VTAB does. Training uses the 1,000 examples `train[:1000]`; a
learning-rate check uses train800 = `train[:800]` against val200 = `train[800:1000]` (the VTAB package
draws val200 from its own validation split instead: same sizes, other images). Test splits are VTAB's.

Published: ViT-L/16 (ImageNet-21k) per task, paper Table 9; their mean is the 72.72% of Table 2.
Seven structured tasks classify another feature than `label`: smallNORB's azimuth and elevation, and
five labels derived from the features (object counts, binned distances, coarser positions and
orientations: vit_jax/labels.py), set as `config.dataset.label`.
"""

import ml_collections

from configs.transfer import recipe

DEFAULT_MODEL = "ViT-L_16"
SOURCE = "Dosovitskiy et al. 2021, Table 9: VTAB-1k per task, ViT-L/16 pre-trained on ImageNet-21k"
# task: (tfds name, classes, VTAB test split, label (config.dataset.label), published top-1 % of
# ViT-L/16 at 384)
TASKS = {
    # Natural
    "caltech101": ("caltech101", 102, "test", "label", 90.8),
    "cifar100": ("cifar100", 100, "test", "label", 84.1),
    "dtd": ("dtd", 47, "test", "label", 74.1),
    "oxford_flowers102": ("oxford_flowers102", 102, "test", "label", 99.3),
    "oxford_iiit_pet": ("oxford_iiit_pet", 37, "test", "label", 92.7),
    "sun397": ("sun397/tfds", 397, "test", "label", 61.0),
    "svhn": ("svhn_cropped", 10, "test", "label", 80.9),
    # Specialized
    "patch_camelyon": ("patch_camelyon", 2, "test", "label", 82.5),
    "eurosat": ("eurosat/rgb", 10, "train[80%:]", "label", 95.6),
    "resisc45": ("resisc45", 45, "train[80%:]", "label", 85.2),
    "diabetic_retinopathy": ("diabetic_retinopathy_detection/btgraham-300", 5, "test", "label", 75.3),
    # Structured
    "clevr_count": ("clevr", 8, "validation", "clevr_count", 70.3),
    "clevr_distance": ("clevr", 6, "validation", "clevr_distance", 56.1),
    "dmlab": ("dmlab", 6, "test", "label", 41.9),
    "dsprites_location": ("dsprites", 16, "train[90%:]", "dsprites_location", 74.7),
    "dsprites_orientation": ("dsprites", 16, "train[90%:]", "dsprites_orientation", 64.9),
    "kitti_distance": ("kitti", 4, "test", "kitti_distance", 79.9),
    "smallnorb_azimuth": ("smallnorb", 18, "test[50%:]", "label_azimuth", 30.5),
    "smallnorb_elevation": ("smallnorb", 9, "test[50%:]", "label_elevation", 41.7),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  task, _, model_arg = (arg or "").partition(",")
  if task not in TASKS:
    raise ValueError(f"Config arg {arg!r}: expected TASK[,MODEL[,RESOLUTION]] with TASK one of "
                     f"{sorted(TASKS)}.")
  tfds_name, num_classes, test_split, label, percent = TASKS[task]
  model, resolution = recipe.parse_arg(model_arg, default_model=DEFAULT_MODEL)
  config = recipe.finetune_config(
      model=model, resolution=resolution, tfds_name=tfds_name, num_classes=num_classes,
      train_split="train[:1000]", eval_split=test_split, total_steps=2_500, warmup_steps=500,
      learning_rate=0.01, lr_sweep=(0.01,), sweep_splits=("train[:800]", "train[800:1000]"),
      published={(DEFAULT_MODEL, 384): percent}, source=SOURCE, train_augment="resize",
      eval_preprocess="resize", random_flip=False)
  config.dataset.label = label
  return config
