"""Prediction: the official fixture classified as its authors computed, any image made a model input,
the CLI on a folder with bad files, checkpoints that do not fit reported clearly."""

import csv
import json
import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest
import skimage.data

from configs import models as model_configs
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import predict
from vit_jax import workdir

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "official_vit"
SIZE = 32  # the fixtures' resolution


def _fixture_config(name="vit_token"):
  with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
    config = json.loads(str(f["__config__"]))
    model_config = model_configs.get_model_config("ViT-Ti_16")
    model_config.update(ml_collections.ConfigDict(config["model"]))
    return model_config, f["__input__"], f["__logits__"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
  """Three good images (RGB JPEG, grayscale PNG in a sub-folder, RGBA PNG; odd sizes), one corrupt
  JPEG, one text file that a folder search passes over."""
  root = tmp_path_factory.mktemp("images")
  (root / "sub").mkdir()
  Image.fromarray(skimage.data.chelsea()).save(root / "cat.jpg")
  Image.fromarray(skimage.data.coffee()[:37, :53, 0]).save(root / "sub" / "gray.png")
  rgba = np.concatenate([skimage.data.astronaut()[:70, :45], np.full((70, 45, 1), 128, np.uint8)], -1)
  Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
  (root / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not really a JPEG")
  (root / "notes.txt").write_text("not an image")
  return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A workdir as training leaves it, holding the official fixture's weights."""
  model_config, _, _ = _fixture_config()
  config = ml_collections.ConfigDict(dict(
      model=model_config, dataset=dict(image_size=SIZE, num_classes=10), keep_checkpoints=1))
  path = tmp_path_factory.mktemp("run")
  workdir.write_config(path, config)
  params = checkpoint.params_from_flat(checkpoint.load_npz(FIXTURES / "vit_token.npz"))
  manager = workdir.checkpoint_manager(path, keep=1)
  workdir.save_state(manager, 10, {"params": params})
  manager.wait_until_finished()
  manager.close()
  return path


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_classify_reproduces_the_official_fixture():
  model_config, images, logits = _fixture_config()
  model, params, image_size = predict.load_checkpoint(model_config, FIXTURES / "vit_token.npz")
  assert image_size == SIZE
  top_k, probs = predict.classify(model, params, images, top_k=3)
  chex.assert_shape([top_k, probs], [(3, 3), (3, 10)])
  np.testing.assert_array_equal(top_k[:, 0], logits.argmax(-1))
  np.testing.assert_array_equal(top_k, np.argsort(-logits, axis=-1)[:, :3])
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(probs, jax.nn.softmax(logits), atol=1e-6)


def test_top_k_is_capped_at_the_number_of_classes():
  model_config, images, _ = _fixture_config()
  model, params, _ = predict.load_checkpoint(model_config, FIXTURES / "vit_token.npz")
  chex.assert_shape(predict.classify(model, params, images, top_k=50)[0], (3, 10))


def test_batches_are_split_over_the_devices_that_divide_them():
  assert jax.local_device_count() == 8  # conftest's host devices
  for batch_size, count in ((8, 8), (12, 6), (7, 7), (3, 3), (1, 1)):
    replicated, split = predict.batch_shardings(batch_size)
    assert split.mesh.size == count and replicated.mesh == split.mesh, batch_size
  model_config, images, _ = _fixture_config()
  model, params, _ = predict.load_checkpoint(model_config, FIXTURES / "vit_token.npz")
  batch = np.concatenate([images] * 4)  # 12 images: 2 on each of 6 devices
  ids, probs = predict.classify(model, params, batch)
  alone = [predict.classify(model, params, image[None]) for image in batch]  # one device each
  np.testing.assert_array_equal(ids, np.concatenate([i for i, _ in alone]))
  np.testing.assert_allclose(probs, np.concatenate([p for _, p in alone]), atol=1e-6)


def test_cli_splits_its_batches_over_host_devices_set_before_jax_starts(run_dir, image_dir, monkeypatch,
                                                                        capsys):
  asked = []
  monkeypatch.setattr(predict.cpu_devices, "use_host_devices", asked.append)
  predict.main([f"--workdir={run_dir}", "--batch_size=4", str(image_dir)])
  capsys.readouterr()
  assert asked == [[4]]


def test_classify_explains_raw_images():
  model_config, _, _ = _fixture_config()
  model, params, _ = predict.load_checkpoint(model_config, FIXTURES / "vit_token.npz")
  with pytest.raises(ValueError, match="prepare"):
    predict.classify(model, params, np.zeros((SIZE, SIZE, 3)))


def test_resolution_comes_from_the_checkpoint(tmp_path):
  flat = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  posemb = "Transformer/posembed_input/pos_embedding"
  flat[posemb] = checkpoint.resize_posemb(flat[posemb], 1 + 12 * 12, num_prefix_tokens=1)
  np.savez(tmp_path / "ckpt48.npz", **flat)
  _, params, image_size = predict.load_checkpoint(_fixture_config()[0], tmp_path / "ckpt48.npz")
  assert image_size == 12 * 4
  np.testing.assert_array_equal(params["Transformer"]["posembed_input"]["pos_embedding"], flat[posemb])


def test_resolution_of_a_grid_that_is_not_square_must_be_given(tmp_path):
  flat = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  flat["Transformer/posembed_input/pos_embedding"] = np.zeros((1, 1 + 8 * 5, 32), np.float32)
  np.savez(tmp_path / "wide.npz", **flat)
  with pytest.raises(ValueError, match="41 tokens.*--image_size"):
    predict.load_checkpoint(_fixture_config()[0], tmp_path / "wide.npz")


def test_checkpoint_of_another_model_is_reported():
  model_config, _, _ = _fixture_config()
  model_config.hidden_size = 64
  with pytest.raises(ValueError, match=r"(?s)does not fit model vit_token.*embedding/kernel"):
    predict.load_checkpoint(model_config, FIXTURES / "vit_token.npz")
  model_config, _, _ = _fixture_config()
  with pytest.raises(ValueError, match=r"(?s)vit_gap.npz does not fit model vit_token.*class-token"):
    predict.load_checkpoint(model_config, FIXTURES / "vit_gap.npz")


def test_head_and_pre_logits_come_from_the_checkpoint():
  model_config, _, _ = _fixture_config("vit_prelogits")
  model_config.representation_size = None
  model_config.num_classes = 1000
  model, params, _ = predict.load_checkpoint(model_config, FIXTURES / "vit_prelogits.npz")
  assert (model.num_classes, model.representation_size) == (10, 16)
  chex.assert_shape(params["pre_logits"]["kernel"], (32, 16))


def test_checkpoint_without_head_is_reported(tmp_path):
  flat = checkpoint.load_npz(FIXTURES / "vit_token.npz")
  np.savez(tmp_path / "features.npz", **{k: v for k, v in flat.items() if not k.startswith("head")})
  with pytest.raises(ValueError, match="no classification head"):
    predict.load_checkpoint(_fixture_config()[0], tmp_path / "features.npz")


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1), (90, 20, 3), (20, 90, 4)])
def test_prepare_makes_any_image_a_model_input(shape):
  image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  prepared = predict.prepare(image, SIZE)
  chex.assert_shape(prepared, (SIZE, SIZE, 3))
  chex.assert_type(prepared, np.float32)
  assert -1.0 <= prepared.min() and prepared.max() <= 1.0


def test_prepare_gives_grayscale_equal_channels_and_drops_alpha():
  gray = skimage.data.coffee()[..., 0]
  prepared = predict.prepare(gray, SIZE)
  np.testing.assert_array_equal(prepared[..., 0], prepared[..., 2])
  rgb = skimage.data.astronaut()
  rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=-1)
  np.testing.assert_array_equal(predict.prepare(rgba, SIZE), predict.prepare(rgb, SIZE))


def test_prepare_refuses_float_pixels():
  with pytest.raises(ValueError, match="uint8"):
    predict.prepare(np.zeros((8, 8, 3), np.float32), SIZE)


def test_read_image_names_a_file_that_is_not_an_image(image_dir):
  with pytest.raises(ValueError, match="corrupt.jpg: not a readable image"):
    predict.read_image(image_dir / "corrupt.jpg")
  chex.assert_shape(predict.read_image(image_dir / "rgba.png"), (70, 45, 3))


def test_class_names():
  assert predict.class_names(None, 3) == ["0", "1", "2"]
  imagenet = predict.class_names(None, 1000)
  assert len(imagenet) == 1000 and imagenet[0].startswith("tench")
  with pytest.raises(ValueError, match="1000 class names but the model has 10"):
    predict.class_names("imagenet", 10)


def test_cli_classifies_the_good_images_and_reports_the_bad_one(run_dir, image_dir, tmp_path, capsys):
  status = predict.main([f"--workdir={run_dir}", f"--csv={tmp_path / 'out.csv'}", "--top_k=3",
                         "--batch_size=2", str(image_dir)])
  out, err = capsys.readouterr()
  assert status == 1
  assert "corrupt.jpg: not a readable image" in err and "skipped 1" in err
  for name in ("cat.jpg", "gray.png", "rgba.png"):
    assert name in out
  assert "notes.txt" not in out + err
  rows = _read_csv(tmp_path / "out.csv")
  assert [pathlib.Path(r["path"]).name for r in rows] == ["cat.jpg", "rgba.png", "gray.png"]
  assert set(rows[0]) >= {"path", "label", "probability"}
  for row in rows:
    assert row["label"] == row["class_id"] and row["label"] in [str(i) for i in range(10)]
    assert 0.1 <= float(row["probability"]) <= 1.0  # top-1 of 10 classes


def test_cli_batch_size_does_not_change_predictions(run_dir, image_dir, tmp_path, capsys):
  for batch_size in (1, 8):
    predict.main([f"--workdir={run_dir}", f"--csv={tmp_path / f'{batch_size}.csv'}",
                  f"--batch_size={batch_size}", str(image_dir)])
  capsys.readouterr()
  one, many = _read_csv(tmp_path / "1.csv"), _read_csv(tmp_path / "8.csv")
  assert [r["label"] for r in one] == [r["label"] for r in many]
  np.testing.assert_allclose([float(r["probability"]) for r in one],
                             [float(r["probability"]) for r in many], atol=1e-5)


def test_cli_labels_file(run_dir, image_dir, tmp_path, capsys):
  names = [f"class {i}" for i in range(10)]
  (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
  status = predict.main([f"--workdir={run_dir}", f"--labels={tmp_path / 'labels.txt'}",
                         f"--csv={tmp_path / 'out.csv'}", str(image_dir / "cat.jpg")])
  assert status == 0
  assert _read_csv(tmp_path / "out.csv")[0]["label"] in names
  (tmp_path / "labels.txt").write_text("a\nb\n")
  assert predict.main([f"--workdir={run_dir}", f"--labels={tmp_path / 'labels.txt'}",
                       str(image_dir / "cat.jpg")]) == 2
  assert "has 2 class names but the model has 10" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ti_checkpoint(tmp_path_factory):
  """A ViT-Ti_16 checkpoint at 32x32 with 10 classes; all zeros, as only its shapes matter here."""
  model = models.create(model_configs.get_model_config("ViT-Ti_16"), num_classes=10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3))))
  path = tmp_path_factory.mktemp("ckpt") / "ti.npz"
  checkpoint.save_npz(path, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes["params"]))
  return path


def test_cli_with_a_named_model_and_checkpoint(ti_checkpoint, image_dir, capsys):
  status = predict.main(["--model=ViT-Ti_16", f"--checkpoint={ti_checkpoint}", "--top_k=2",
                         str(image_dir / "cat.jpg")])
  out = capsys.readouterr().out
  assert status == 0
  assert out.splitlines()[0].endswith("cat.jpg") and len(out.splitlines()) == 3


def test_cli_reports_a_model_that_does_not_fit_the_checkpoint(ti_checkpoint, image_dir, capsys):
  status = predict.main(["--model=ViT-S_16", f"--checkpoint={ti_checkpoint}", str(image_dir)])
  err = capsys.readouterr().err
  assert status == 2
  assert f"error: Checkpoint {ti_checkpoint} does not fit model ViT-S_16" in err
  assert "embedding/kernel" in err


@pytest.mark.parametrize("head_bias", [None, np.zeros(5, np.float32)])
def test_cli_refuses_a_missing_or_mismatched_head_bias(ti_checkpoint, tmp_path, image_dir, capsys,
                                                       head_bias):
  flat = checkpoint.load_npz(ti_checkpoint)
  del flat["head/bias"]
  if head_bias is not None:
    flat["head/bias"] = head_bias
  np.savez(tmp_path / "bad_head.npz", **flat)
  status = predict.main(["--model=ViT-Ti_16", f"--checkpoint={tmp_path / 'bad_head.npz'}",
                         str(image_dir / "cat.jpg")])
  captured = capsys.readouterr()
  assert status == 2 and not captured.out
  assert ("head/bias: checkpoint shape (5,) != model shape (10,)" if head_bias is not None
          else "missing from the checkpoint: ['head/bias']") in captured.err


def test_cli_reports_a_damaged_npz_in_one_line(tmp_path, image_dir, capsys):
  data = (FIXTURES / "vit_token.npz").read_bytes()
  (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
  status = predict.main(["--model=ViT-Ti_16", f"--checkpoint={tmp_path / 'truncated.npz'}",
                         str(image_dir / "cat.jpg")])
  err = capsys.readouterr().err
  assert status == 2
  assert err.splitlines() == [f"error: {tmp_path / 'truncated.npz'} is a damaged .npz checkpoint "
                              "(BadZipFile: File is not a zip file); download or copy it again."]


def test_cli_wants_workdir_or_model_and_checkpoint(image_dir, capsys):
  for argv in (["--model=ViT-Ti_16"], ["--workdir=x", "--checkpoint=y"], []):
    with pytest.raises(SystemExit) as exit_info:
      predict.main(argv + [str(image_dir)])
    assert exit_info.value.code == 2
  assert "--workdir" in capsys.readouterr().err


def test_cli_unwritable_csv_fails_before_classifying(run_dir, image_dir, tmp_path, capsys):
  status = predict.main([f"--workdir={run_dir}", f"--csv={tmp_path / 'no_folder' / 'out.csv'}",
                         str(image_dir)])
  out, err = capsys.readouterr()
  assert status == 2
  assert f"error: cannot write --csv={tmp_path / 'no_folder' / 'out.csv'}" in err
  assert out == "" and "Classified" not in err


def test_cli_missing_input_exits_2_and_names_it(run_dir, image_dir, tmp_path, capsys):
  status = predict.main([f"--workdir={run_dir}", f"--csv={tmp_path / 'out.csv'}",
                         str(image_dir / "cat.jpg"), str(tmp_path / "missing.jpg")])
  out, err = capsys.readouterr()
  assert status == 2
  assert f"error: no such file or folder: {tmp_path / 'missing.jpg'}" in err
  assert out == "" and not (tmp_path / "out.csv").exists()


def test_cli_prepares_images_as_the_run_evaluated_them(run_dir, image_dir, tmp_path, capsys):
  run = tmp_path / "run"
  shutil.copytree(run_dir, run)
  config = workdir.read_config(run)
  config.dataset.eval_preprocess = "resize"  # a run evaluated on squashed images
  workdir.write_config(run, config)
  assert predict.main([f"--workdir={run}", f"--csv={tmp_path / 'out.csv'}",
                       str(image_dir / "cat.jpg")]) == 0
  capsys.readouterr()
  written = float(_read_csv(tmp_path / "out.csv")[0]["probability"])
  model, params, size = predict.load_workdir(run)
  photo = predict.read_image(image_dir / "cat.jpg")  # 300 x 451: squashing and cropping differ
  top1 = {view: predict.classify(model, params, predict.prepare(photo, size, view)[None])[1].max()
          for view in ("resize", "central_crop")}
  assert written == pytest.approx(top1["resize"], abs=2e-6)
  assert abs(top1["central_crop"] - top1["resize"]) > 1e-4
