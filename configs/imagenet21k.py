"""ViT-B/16 pretraining on ImageNet-21k at 224 px, the paper's upstream recipe (Dosovitskiy et al. 2021).

On a TPU pod slice (README "Running on a TPU pod / GPU cluster"):
  launch/tpu_pod.sh run --config=configs/imagenet21k.py --workdir=gs://BUCKET/runs/vit-b16-i21k
The data set is the TFDS data set `imagenet21k` in TFDS_DATA_DIR (prepare it once with
launch/prepare_imagenet21k.py from the extracted winter-2021 release): 21,843 classes, the last 102,400
training images held out for evaluation (`--config.dataset.eval_split=...` to change).
Paper, Table 3: Adam (b1 0.9, b2 0.999), batch 4096, learning rate 1e-3, 10k warmup steps, linear decay,
weight decay 0.03, dropout 0.1, 90 epochs (~312k steps of 4096 on 14.2M images), a 768-wide tanh
pre-logits layer. The published ViT-B/16 from this recipe reaches 84.0-84.6% on ImageNet after
fine-tuning at 384 px (Table 5; configs/transfer/imagenet2012.py).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.get_config()
  config.model.representation_size = 768
  config.model.transformer.dropout_rate = 0.1
  config.model.dtype = "bfloat16"  # parameters stay float32; matmuls in bfloat16 on TPUs and GPUs

  config.dataset.update(source="tfds", name="imagenet21k", num_classes=21843,
                        train_split="train[102400:]", eval_split="train[:102400]", image_size=224,
                        train_augment="inception_crop", shuffle_buffer=250_000)

  config.batch_size = 4096
  config.eval_batch_size = 4096
  config.total_steps = 312_000
  config.optimizer.update(name="adamw", learning_rate=1e-3, warmup_steps=10_000, schedule="linear",
                          weight_decay=0.03, b1=0.9, b2=0.999, grad_clip_norm=1.0)
  config.loss.name = "sigmoid_xent"  # ImageNet-21k images carry several plausible labels (big_vision)
  config.log_every = 100
  config.eval_every = 10_000
  config.checkpoint_every = 2_000
  config.keep_checkpoints = 2
  return config
