"""timm, Hugging Face and big_vision checkpoints in and out of vit_jax (`vit_jax.convert`)."""

import json
import pathlib
import shutil

import flax
import jax
import numpy as np
import pytest
import safetensors.numpy

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import convert
from vit_jax import models

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
INTEROP = FIXTURES / "interop"
OFFICIAL = FIXTURES / "official_vit"
ATOL = 1e-5
# fixture: (format, folder to load, epsilon, classifier, pooled_norm)
SOURCES = {
    "timm_vit_token": ("timm", INTEROP / "timm_vit_token", 1e-6, "token", False),
    "timm_vit_gap_fcnorm": ("timm", INTEROP / "timm_vit_gap_fcnorm", 1e-6, "gap", True),
    "timm_vit_map_token": ("timm", INTEROP / "timm_vit_map_token", 1e-6, "map", False),
    "hf_vit": ("hf", INTEROP / "hf_vit" / "hf_checkpoint", 1e-12, "token", False),
}


@pytest.fixture(autouse=True)
def _full_precision():
  with jax.default_matmul_precision("highest"):
    yield


def _apply(config, params, images, **overrides):
  return np.asarray(models.create(config, **overrides).apply({"params": params}, images))


def _flat(params):
  return flax.traverse_util.flatten_dict(params, sep="/")


def _assert_same_params(a, b):
  flat_a, flat_b = _flat(a), _flat(b)
  assert sorted(flat_a) == sorted(flat_b)
  for key in flat_a:
    assert np.array_equal(flat_a[key], flat_b[key]), key
    assert np.asarray(flat_a[key]).dtype == np.asarray(flat_b[key]).dtype, key


def _random_params(config, seed=0):
  """Every leaf random (no zeros or ones), so a swapped or dropped tensor cannot go unnoticed."""
  model = models.create(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)))["params"])
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _tiny_config(**fields):
  config = model_configs.get_model_config("ViT-Ti_16")
  config.update(dict(hidden_size=32, patches=dict(size=(4, 4)), num_classes=10))
  config.transformer.update(dict(num_heads=2, mlp_dim=64, num_layers=2))
  config.update(fields)
  return config


@pytest.mark.parametrize("fixture", sorted(SOURCES))
def test_fixture_matches_reference_logits_features_and_tokens(fixture):
  source_format, path, *_ = SOURCES[fixture]
  config, params = convert.load(path, source_format)
  reference = np.load(INTEROP / fixture / "reference.npz", allow_pickle=False)
  images = reference["input_nhwc"]
  model = models.create(config)
  logits, state = model.apply({"params": params}, images, capture_intermediates=True)
  tokens = state["intermediates"]["Transformer"]["__call__"][0]
  features = _apply(config, {k: v for k, v in params.items() if k != "head"}, images, num_classes=0)
  np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(features, reference["features"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(tokens, reference["tokens"], rtol=0, atol=ATOL)


@pytest.mark.parametrize("fixture", sorted(SOURCES))
def test_converted_config_records_gelu_epsilon_normalisation_and_pooling(fixture):
  source_format, path, epsilon, classifier, pooled_norm = SOURCES[fixture]
  config, _ = convert.load(path, source_format)
  assert config.gelu_approximate is False  # timm and HF use the exact erf GELU
  assert config.layer_norm_epsilon == epsilon
  assert tuple(config.pixel_mean) == tuple(config.pixel_std) == (0.5, 0.5, 0.5)
  assert (config.classifier, config.pooled_norm) == (classifier, pooled_norm)
  assert (config.hidden_size, tuple(config.patches.size), config.num_classes) == (32, (4, 4), 10)
  assert dict(config.transformer) == dict(num_heads=2, mlp_dim=64, num_layers=2, dropout_rate=0.,
                                          attention_dropout_rate=0.)


@pytest.mark.parametrize("fixture,weights", [("timm_vit_token", "model.safetensors"),
                                             ("timm_vit_map_token", "model.safetensors"),
                                             ("hf_vit", "hf_checkpoint/model.safetensors")])
def test_params_txt_every_tensor_is_consumed_exactly_once(fixture, weights, tmp_path):
  source_format, path, *_ = SOURCES[fixture]
  listed = {}
  for line in (INTEROP / fixture / "params.txt").read_text().splitlines():
    if line and not line.startswith("#"):
      name, shape = line.split("\t")
      listed[name] = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
  source = safetensors.numpy.load_file(INTEROP / fixture / weights)
  assert {k: v.shape for k, v in source.items()} == listed
  config, params = convert.load(path, source_format)
  assert sum(np.size(x) for x in jax.tree_util.tree_leaves(params)) == sum(v.size for v in source.values())
  written = convert.save(params, config, tmp_path / "out", source_format)
  back = safetensors.numpy.load_file(written)
  assert sorted(back) == sorted(listed)
  for name in listed:
    assert np.array_equal(back[name], source[name]), name


ROUND_TRIP_MODELS = {
    "token": dict(),
    "token_fc_norm": dict(pooled_norm=True),
    "gap": dict(classifier="gap"),
    "gap_fc_norm_exact_gelu": dict(classifier="gap", pooled_norm=True, gelu_approximate=False),
    "gap_class_token_fc_norm": dict(classifier="gap", class_token=True, pooled_norm=True),
    "map_imagenet_norm": dict(classifier="map", pixel_mean=(0.485, 0.456, 0.406),
                              pixel_std=(0.229, 0.224, 0.225)),
    "map_beside_class_token": dict(classifier="map", class_token=True),
    "map_skipping_class_token": dict(classifier="map", class_token=True, map_class_token=False),
    "features_only_scanned": dict(num_classes=0, scan=True),
    "pre_logits_features": dict(num_classes=0, representation_size=16),
}


@pytest.mark.parametrize("name", sorted(set(ROUND_TRIP_MODELS) - {"pre_logits_features"}))
def test_round_trip_vit_jax_timm_vit_jax_is_exact(name, tmp_path):
  config = _tiny_config(**ROUND_TRIP_MODELS[name])
  params = _random_params(config)
  convert.save(params, config, tmp_path / "model.safetensors", "timm")
  back_config, back = convert.load(tmp_path / "model.safetensors", "timm")
  _assert_same_params(back, params)
  assert back_config.to_dict() == config.to_dict()


@pytest.mark.parametrize("name", ["token", "features_only_scanned", "pre_logits_features"])
def test_round_trip_vit_jax_hf_vit_jax_is_exact(name, tmp_path):
  config = _tiny_config(**ROUND_TRIP_MODELS[name])
  params = _random_params(config)
  convert.save(params, config, tmp_path / "hf", "hf")
  back_config, back = convert.load(tmp_path / "hf", "hf")
  _assert_same_params(back, params)
  assert back_config.to_dict() == config.to_dict()


def test_timm_avg_pool_with_class_token_loads_as_gap_with_class_token(tmp_path):
  """timm global_pool='avg' beside a class token (MAE fine-tunes): the class token is kept and the head
  averages the patch tokens only. Only timm's own description is left, not our embedded config."""
  config = _tiny_config(classifier="gap", class_token=True, pooled_norm=True, gelu_approximate=False)
  params = _random_params(config)
  convert.save(params, config, tmp_path / "timm", "timm")
  hub = json.loads((tmp_path / "timm" / "config.json").read_text())
  del hub[convert.CONFIG_KEY]
  (tmp_path / "timm" / "config.json").write_text(json.dumps(hub))
  state = safetensors.numpy.load_file(tmp_path / "timm" / "model.safetensors")
  safetensors.numpy.save_file(state, tmp_path / "timm" / "model.safetensors")  # drops the metadata
  assert {"cls_token", "fc_norm.weight"} <= set(state) and "norm.weight" not in state
  assert hub["model_args"]["global_pool"] == "avg" and hub["model_args"]["class_token"]
  back_config, back = convert.load(tmp_path / "timm", "timm")
  assert (back_config.classifier, back_config.class_token, back_config.pooled_norm) == ("gap", True, True)
  _assert_same_params(back, params)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(_apply(back_config, back, images), _apply(config, params, images))


def test_timm_map_fixture_drops_the_class_token_before_the_attention_pool():
  config, _ = convert.load(INTEROP / "timm_vit_map_token", "timm")
  assert (config.classifier, config.class_token, config.map_class_token) == ("map", True, False)


@pytest.mark.parametrize("map_class_token", [False, True])
def test_timm_export_of_map_beside_a_class_token_says_whether_the_pool_sees_it(tmp_path, map_class_token):
  """Only timm's own description is left (no embedded config): `pool_include_prefix` carries it."""
  config = _tiny_config(classifier="map", class_token=True, map_class_token=map_class_token)
  params = _random_params(config)
  convert.save(params, config, tmp_path / "timm", "timm")
  hub = json.loads((tmp_path / "timm" / "config.json").read_text())
  assert (hub["model_args"]["global_pool"], hub["model_args"]["pool_include_prefix"]) == ("map", map_class_token)
  del hub[convert.CONFIG_KEY]
  (tmp_path / "timm" / "config.json").write_text(json.dumps(hub))
  state = safetensors.numpy.load_file(tmp_path / "timm" / "model.safetensors")
  safetensors.numpy.save_file(state, tmp_path / "timm" / "model.safetensors")  # drops the metadata
  back_config, back = convert.load(tmp_path / "timm", "timm")
  assert (back_config.classifier, back_config.class_token, back_config.map_class_token) == (
      "map", True, map_class_token)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(_apply(back_config, back, images), _apply(config, params, images))


def test_timm_class_token_and_fc_norm_without_global_pool_raises(tmp_path):
  config = _tiny_config(classifier="gap", class_token=True, pooled_norm=True)
  convert.save(_random_params(config), config, tmp_path / "model.safetensors", "timm")
  state = safetensors.numpy.load_file(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(state, tmp_path / "model.safetensors")  # drops our config
  with pytest.raises(ValueError, match="global_pool"):
    convert.load(tmp_path / "model.safetensors", "timm", num_heads=2)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_MODELS))
def test_round_trip_vit_jax_npz_is_exact(name, tmp_path):
  config = _tiny_config(**ROUND_TRIP_MODELS[name])
  params = _random_params(config)
  convert.save(params, config, tmp_path / "model.npz", "vit_jax")
  back_config, back = convert.load(tmp_path / "model.npz", "vit_jax")
  _assert_same_params(back, params)
  assert back_config.to_dict() == config.to_dict()


def test_exports_refuse_a_class_token_the_format_would_pool_differently(tmp_path):
  config = _tiny_config(classifier="gap", class_token=True)
  with pytest.raises(ValueError, match="class token only to classify it"):
    convert.save(_random_params(config), config, tmp_path / "bv.npz", "big_vision")


def test_hf_transformers5_module_names_load_like_the_classic_ones(tmp_path):
  folder = INTEROP / "hf_vit" / "hf_checkpoint"
  state = safetensors.numpy.load_file(folder / "model.safetensors")
  renames = {"encoder.layer.": "layers.", "attention.attention.query": "attention.q_proj",
             "attention.attention.key": "attention.k_proj", "attention.attention.value": "attention.v_proj",
             "attention.output.dense": "attention.o_proj", "intermediate.dense": "mlp.fc1",
             ".output.dense": ".mlp.fc2"}
  renamed = {}
  for name, value in state.items():
    for old, new in renames.items():
      name = name.replace(old, new)
    renamed[name] = value
  assert "vit.layers.0.mlp.fc2.weight" in renamed and "vit.layers.0.attention.o_proj.weight" in renamed
  shutil.copytree(folder, tmp_path / "hf")
  safetensors.numpy.save_file(renamed, tmp_path / "hf" / "model.safetensors")
  _assert_same_params(convert.load(tmp_path / "hf", "hf")[1], convert.load(folder, "hf")[1])


def test_official_npz_round_trips_through_timm_and_hf_folders(tmp_path):
  config, params = convert.load(OFFICIAL / "vit_token.npz", "vit_jax")
  for target in ("timm", "hf"):
    convert.save(params, config, tmp_path / target, target)
    back_config, back = convert.load(tmp_path / target, target)
    _assert_same_params(back, params)
    assert back_config.to_dict() == config.to_dict()
  convert.save(params, config, tmp_path / "vit_jax", "vit_jax")
  back_config, back = convert.load(tmp_path / "vit_jax", "vit_jax")
  _assert_same_params(back, params)
  assert back_config.to_dict() == config.to_dict()


@pytest.mark.parametrize("fixture", ["vit_token", "vit_prelogits", "vit_gap"])
def test_official_npz_without_config_reproduces_its_logits(fixture):
  config, params = convert.load(OFFICIAL / f"{fixture}.npz", "vit_jax")
  with np.load(OFFICIAL / f"{fixture}.npz", allow_pickle=False) as f:
    expected = json.loads(str(f["__config__"]))["model"]
    np.testing.assert_allclose(_apply(config, params, f["__input__"]), f["__logits__"], rtol=0, atol=ATOL)
  assert (config.classifier, config.representation_size) == (expected["classifier"],
                                                              expected["representation_size"])
  assert config.gelu_approximate and config.layer_norm_epsilon == 1e-6


def test_vit_jax_npz_without_config_infers_a_hybrid(tmp_path):
  config = _tiny_config(resnet=dict(num_layers=(1, 2), width_factor=1), patches=dict(size=(1, 1)))
  params = _random_params(config)
  convert.save(params, config, tmp_path / "hybrid.npz", "vit_jax")
  (tmp_path / "config.json").unlink()
  back_config, back = convert.load(tmp_path / "hybrid.npz", "vit_jax")
  _assert_same_params(back, params)
  assert back_config.to_dict() == dict(config.to_dict(), model_name="vit_jax:hybrid.npz")


def _big_vision_npz(path, *, scanned):
  """The official vit_token.npz as big_vision writes it: `params/` prefix, Linen numbering, position
  embedding of the patches only (the class token's row folded into `cls`), optionally stacked blocks."""
  flat = checkpoint.load_npz(OFFICIAL / "vit_token.npz")
  linen = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
           "MlpBlock_3": "MlpBlock_0"}
  out = {}
  for key, value in flat.items():
    for old, new in linen.items():
      key = key.replace(f"/{old}/", f"/{new}/")
    out[key] = value
  posemb = out.pop("Transformer/posembed_input/pos_embedding")
  out["cls"] = out["cls"] + posemb[:, :1]
  out["pos_embedding"] = posemb[:, 1:]
  if scanned:
    for key in [k for k in out if k.startswith("Transformer/encoderblock_0/")]:
      rest = key.removeprefix("Transformer/encoderblock_0/")
      out["Transformer/encoderblock/" + rest] = np.stack(
          [out.pop(f"Transformer/encoderblock_{i}/{rest}") for i in range(2)])
  np.savez(path, **{"params/" + k: v for k, v in out.items()})
  return path


@pytest.mark.parametrize("scanned", [False, True], ids=["per_block", "scanned"])
def test_big_vision_npz_reproduces_official_logits(scanned, tmp_path):
  config, params = convert.load(_big_vision_npz(tmp_path / "bv.npz", scanned=scanned), "big_vision")
  with np.load(OFFICIAL / "vit_token.npz", allow_pickle=False) as f:
    images, logits = f["__input__"], f["__logits__"]
  np.testing.assert_allclose(_apply(config, params, images), logits, rtol=0, atol=ATOL)
  assert np.all(params["Transformer"]["posembed_input"]["pos_embedding"][0, 0] == 0)


def test_big_vision_export_loads_back_to_the_same_predictions(tmp_path):
  config, params = convert.load(OFFICIAL / "vit_token.npz", "vit_jax")
  written = convert.save(params, config, tmp_path / "bv.npz", "big_vision")
  with np.load(written) as f:
    assert "params/pos_embedding" in f.files and f["params/pos_embedding"].shape == (1, 64, 32)
    assert "params/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel" in f.files
  back_config, back = convert.load(written, "big_vision")
  with np.load(OFFICIAL / "vit_token.npz", allow_pickle=False) as f:
    np.testing.assert_allclose(_apply(back_config, back, f["__input__"]), f["__logits__"], rtol=0, atol=ATOL)


def test_load_with_scan_override_stacks_the_blocks():
  _, params = convert.load(INTEROP / "timm_vit_token", "timm")
  config, scanned = convert.load(INTEROP / "timm_vit_token", "timm", scan=True)
  assert config.scan and scanned["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (2, 32)
  _assert_same_params(checkpoint.params_from_flat(checkpoint.flat_from_params(scanned)), params)


def test_timm_without_config_needs_num_heads(tmp_path):
  shutil.copy(INTEROP / "timm_vit_token" / "model.safetensors", tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match="num_heads"):
    convert.load(tmp_path, "timm")
  config, _ = convert.load(tmp_path / "model.safetensors", "timm", num_heads=2)
  assert config.transformer.num_heads == 2


def test_unknown_format_raises():
  with pytest.raises(ValueError, match="Unknown source format 'onnx'"):
    convert.load(INTEROP / "timm_vit_token", "onnx")
  with pytest.raises(ValueError, match="Unknown target format"):
    convert.save({}, _tiny_config(), "/tmp/unused", "keras")


def test_missing_file_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="No timm checkpoint"):
    convert.load(tmp_path / "nope.safetensors", "timm")
  with pytest.raises(FileNotFoundError, match="config.json"):
    convert.load(tmp_path, "hf")


def test_unrecognised_tensor_names_raise(tmp_path):
  state = safetensors.numpy.load_file(INTEROP / "timm_vit_token" / "model.safetensors")
  state["blocks.0.ls1.gamma"] = np.ones(32, np.float32)
  safetensors.numpy.save_file(state, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=r"unrecognised tensors \['blocks.0.ls1.gamma'\].*layer scale"):
    convert.load(tmp_path / "model.safetensors", "timm", num_heads=2)


def test_unsupported_exports_raise(tmp_path):
  config = _tiny_config(classifier="gap")
  with pytest.raises(ValueError, match="Hugging Face ViT classifies the CLS token"):
    convert.save(_random_params(config), config, tmp_path / "hf", "hf")
  config = _tiny_config(representation_size=16)
  with pytest.raises(ValueError, match="pre-logits"):
    convert.save(_random_params(config), config, tmp_path / "timm", "timm")


def test_cli_converts_timm_to_hf_and_reports_bad_input(tmp_path, capsys):
  assert convert.main(["--from=timm", "--to=hf", str(INTEROP / "timm_vit_token"), str(tmp_path / "hf")]) == 0
  assert "21,162 parameters" in capsys.readouterr().out
  _, from_timm = convert.load(INTEROP / "timm_vit_token", "timm")
  _, from_hf = convert.load(tmp_path / "hf", "hf")
  _assert_same_params(from_hf, from_timm)
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["--from=timm", "--to=hf", str(tmp_path / "missing"), str(tmp_path / "out")])
  assert exit_info.value.code == 2 and "No timm checkpoint" in capsys.readouterr().err
