"""Official `.npz` checkpoints: the authors' logits reproduced, round trips, adaptation, clear errors."""

import json
import pathlib

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import train

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_vit"
FIXTURE_NAMES = ("vit_token", "vit_gap", "vit_prelogits", "vit_hybrid")
ATOL = 1e-5  # the fixture README's tolerance (float32, CPU)


def load_fixture(name):
  with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
    config = json.loads(str(f["__config__"]))
    model_config = model_configs.get_model_config("ViT-Ti_16")
    model_config.update(ml_collections.ConfigDict(config["model"]))
    return model_config, f["__input__"], f["__logits__"], f["__prelogits__"]


def init(model, images):
  return model.init(jax.random.key(0), jnp.asarray(images), train=False)["params"]


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_official_fixture_reproduces_reference_logits(name, scan):
  model_config, images, logits, prelogits = load_fixture(name)
  model_config.scan = scan
  model = models.create(model_config)
  params = checkpoint.load_pretrained(FIXTURES / f"{name}.npz", init(model, images), model_config)
  np.testing.assert_allclose(model.apply({"params": params}, images), logits, atol=ATOL, rtol=0)
  features = models.create(model_config, num_classes=0).apply({"params": params}, images)
  np.testing.assert_allclose(features, prelogits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("scan", [False, True])
def test_save_then_load_round_trips_exactly_in_the_published_layout(tmp_path, scan):
  original = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  params = checkpoint.params_from_flat(original, scan=scan)
  checkpoint.save_npz(tmp_path / "saved.npz", params)
  saved = checkpoint.load_npz(tmp_path / "saved.npz")
  assert saved.keys() == original.keys()
  for key in original:
    np.testing.assert_array_equal(saved[key], original[key], err_msg=key)


def test_linen_block_numbering_loads_like_pre_linen():
  original = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
             "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
  linen = {}
  for key, value in original.items():
    for old, new in renames.items():
      key = key.replace(f"/{old}/", f"/{new}/")
    linen[key] = value
  assert linen.keys() != original.keys()
  jax.tree.map(np.testing.assert_array_equal, checkpoint.params_from_flat(linen),
               checkpoint.params_from_flat(original))


def test_group_norm_stored_as_1_1_1_c_is_squeezed(tiny_model_config):
  tiny_model_config.resnet = dict(num_layers=(1,), width_factor=0.5)
  tiny_model_config.patches.size = (1, 1)
  model = models.create(tiny_model_config)
  params = init(model, np.zeros((1, 16, 16, 3), np.float32))
  flat = checkpoint.flat_from_params(params)
  official = {k: v.reshape(1, 1, 1, -1) if "/gn" in f"/{k}" else v for k, v in flat.items()}
  assert official["gn_root/scale"].shape == (1, 1, 1, 32)
  restored = checkpoint.adapt(checkpoint.params_from_flat(official), params, tiny_model_config)
  jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, params))


def test_posemb_resize_to_the_same_grid_is_identity():
  posemb = np.random.default_rng(0).normal(size=(1, 65, 8)).astype(np.float32)
  assert checkpoint.resize_posemb(posemb, 65, num_prefix_tokens=1) is posemb


def test_posemb_resize_keeps_class_token_and_grid_corners():
  posemb = np.random.default_rng(0).normal(size=(1, 65, 8)).astype(np.float32)
  resized = checkpoint.resize_posemb(posemb, 1 + 12 * 12, num_prefix_tokens=1)
  assert resized.shape == (1, 145, 8)
  np.testing.assert_array_equal(resized[:, 0], posemb[:, 0])
  old, new = posemb[0, 1:].reshape(8, 8, 8), resized[0, 1:].reshape(12, 12, 8)
  for (i, j), (k, m) in zip([(0, 0), (0, 7), (7, 0), (7, 7)], [(0, 0), (0, 11), (11, 0), (11, 11)]):
    np.testing.assert_allclose(new[k, m], old[i, j], atol=1e-6)  # bilinear with aligned corners


def test_fixture_loads_at_a_higher_resolution_with_a_new_head():
  model_config, images, _, _ = load_fixture("vit_token")
  model = models.create(model_config, num_classes=5)
  big_images = jax.image.resize(images, (3, 48, 48, 3), "bilinear")
  params = checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(model, big_images), model_config,
                                      transfer=True)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 145, 32)
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 5)))
  assert model.apply({"params": params}, big_images).shape == (3, 5)


def test_pre_logits_are_dropped_when_the_model_has_none():
  model_config, images, _, _ = load_fixture("vit_prelogits")
  model_config.representation_size = None
  model = models.create(model_config)
  params = checkpoint.load_pretrained(FIXTURES / "vit_prelogits.npz", init(model, images), model_config,
                                      transfer=True)
  assert "pre_logits" not in params and params["head"]["kernel"].shape == (32, 10)


def test_transfer_starts_from_a_zero_head_also_for_the_same_classes():
  model_config, images, _, _ = load_fixture("vit_token")
  model = models.create(model_config)
  official = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  params = checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(model, images), model_config,
                                      transfer=True)
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((32, 10)))
  np.testing.assert_array_equal(params["head"]["bias"], np.zeros(10))
  np.testing.assert_array_equal(params["embedding"]["kernel"], official["embedding/kernel"])
  kept = checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(model, images), model_config,
                                    transfer=True, keep_head=True)
  np.testing.assert_array_equal(kept["head"]["kernel"], official["head/kernel"])


def test_transfer_head_bias_starts_at_head_bias_init():
  model_config, images, _, _ = load_fixture("vit_token")
  model_config.head_bias_init = -10.0
  params = checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(models.create(model_config), images),
                                      model_config, transfer=True)
  np.testing.assert_array_equal(params["head"]["bias"], np.full(10, -10.0))


def test_keep_head_of_another_shape_is_refused():
  model_config, images, _, _ = load_fixture("vit_token")
  model = models.create(model_config, num_classes=5)
  with pytest.raises(ValueError, match=r"head/kernel \(32, 10\) does not fit the model's \(32, 5\).*"
                                       r"init_keep_head = False"):
    checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(model, images), model_config,
                               transfer=True, keep_head=True)


def test_init_checkpoint_gives_a_zero_head_unless_init_keep_head():
  model_config, images, _, _ = load_fixture("vit_token")
  shapes = jax.eval_shape(lambda: init(models.create(model_config), images))
  config = ml_collections.ConfigDict(dict(init_checkpoint=str(FIXTURES / "vit_token.npz"), model=model_config,
                                          init_keep_head=False))
  np.testing.assert_array_equal(train.load_init_params(config, shapes)["head"]["kernel"], np.zeros((32, 10)))
  config.init_keep_head = True
  np.testing.assert_array_equal(train.load_init_params(config, shapes)["head"]["kernel"],
                                checkpoint.load_npz(FIXTURES / "vit_token.npz")["head/kernel"])


def test_inference_load_refuses_a_head_of_another_shape():
  model_config, images, _, _ = load_fixture("vit_token")
  model = models.create(model_config, num_classes=5)
  with pytest.raises(ValueError, match=r"(?s)head/bias: checkpoint shape \(10,\) != model shape \(5,\).*"
                                       r"head/kernel: checkpoint shape \(32, 10\) != model shape \(32, 5\)"):
    checkpoint.load_pretrained(FIXTURES / "vit_token.npz", init(model, images), model_config)


def edited_fixture(tmp_path, edit) -> pathlib.Path:
  """vit_token.npz with `edit(flat)` applied, saved as a new file."""
  flat = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  edit(flat)
  np.savez(tmp_path / "edited.npz", **flat)
  return tmp_path / "edited.npz"


def test_inference_load_refuses_a_missing_head_bias(tmp_path):
  model_config, images, _, _ = load_fixture("vit_token")
  path = edited_fixture(tmp_path, lambda flat: flat.pop("head/bias"))
  with pytest.raises(ValueError, match=r"missing from the checkpoint: \['head/bias'\]"):
    checkpoint.load_pretrained(path, init(models.create(model_config), images), model_config)


def test_wrong_shape_names_the_parameter_and_both_shapes(tmp_path):
  model_config, images, _, _ = load_fixture("vit_token")
  path = edited_fixture(tmp_path, lambda flat: flat.update(
      {"Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel": np.zeros((32, 48), np.float32)}))
  model = models.create(model_config)
  with pytest.raises(ValueError, match=r"encoderblock_1/MlpBlock_3/Dense_0/kernel: checkpoint shape "
                                       r"\(32, 48\) != model shape \(32, 64\)"):
    checkpoint.load_pretrained(path, init(model, images), model_config)


def test_missing_key_is_named(tmp_path):
  model_config, images, _, _ = load_fixture("vit_token")
  path = edited_fixture(tmp_path, lambda flat: flat.pop("Transformer/encoder_norm/scale"))
  model = models.create(model_config)
  with pytest.raises(ValueError, match=r"missing from the checkpoint: \['Transformer/encoder_norm/scale'\]"):
    checkpoint.load_pretrained(path, init(model, images), model_config)


def test_pickled_npz_is_refused_without_unpickling(tmp_path):
  np.savez(tmp_path / "pickled.npz", evil=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match="never unpickles"):
    checkpoint.load_npz(tmp_path / "pickled.npz")


def test_missing_and_corrupt_files_raise_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint at"):
    checkpoint.load_npz(tmp_path / "absent.npz")
  (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="not a readable .npz checkpoint"):
    checkpoint.load_npz(tmp_path / "corrupt.npz")


def test_truncated_or_bit_flipped_npz_names_the_path(tmp_path):
  data = (FIXTURES / "vit_token.npz").read_bytes()
  (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0x10  # inside an array: the member's CRC no longer matches
  (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
  for name in ("truncated.npz", "flipped.npz"):
    with pytest.raises(ValueError, match=rf"{tmp_path / name} is a damaged .npz checkpoint \(BadZipFile"):
      checkpoint.load_npz(tmp_path / name)


def test_saved_names_are_the_published_ones(tmp_path, tiny_model_config):
  tiny_model_config.scan = True
  model = models.create(tiny_model_config)
  checkpoint.save_npz(tmp_path / "c.npz", init(model, np.zeros((1, 32, 32, 3), np.float32)))
  names = set(checkpoint.load_npz(tmp_path / "c.npz"))
  assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel" in names
  assert not any(name.startswith("Transformer/encoderblock/") for name in names)
  assert set(flax.traverse_util.flatten_dict(checkpoint.params_from_flat(
      checkpoint.load_npz(FIXTURES / "vit_token.npz")), sep="/")) == set(
          checkpoint.load_npz(FIXTURES / "vit_token.npz"))
