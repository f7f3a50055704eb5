"""Images/s, compile time, FLOP/s and MFU of a vit_jax model, optionally side by side with timm.

  python -m benchmarks.throughput --model=ViT-S_16 --batch=8 --res=224 --dtype=float32 \
      --mode=train --peer=timm --repeats=9 --json

Warms up, then times `--repeats` runs of `--iters` steps each (blocking on the result) and reports the
median. With a peer, the vit_jax and the peer runs alternate, so both see the same machine load: on
a shared machine only the ratio means much (and `ratio_vs_peer_paired_median`, the median ratio of
back-to-back pairs, is steadier still). FLOPs come from XLA's cost analysis of the compiled step; the
peak is the best of a few large jitted matmuls in the same dtype, timed in turns with the models, so
MFU is against what this device reaches now under the same load, not a data sheet.

`--compile_only` lowers and compiles the step for abstract inputs (nothing is allocated) and reports
the compile time: that is how the scan-vs-unrolled compile times of large models are measured.

Imports neither TensorFlow nor clu (it uses `vit_jax.steps`, not `vit_jax.train`), so it runs on a
bare GPU machine that has jax, flax, optax and ml_collections. torch and timm (the `[bench]` extra)
are imported only for `--peer=timm`.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import digits  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import fashion_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import models as model_configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import cpu_devices  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_jax import steps  # pylint: disable=g-import-not-at-top,wrong-import-position

_JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The small models that the studies train on CPU, besides the names of configs/models.py.
STUDY_MODELS = {
    "digits": lambda: digits.get_config().model,
    "fmnist_vit_tiny": lambda: fashion_mnist.model_config("vit_tiny"),
    "fmnist_vit_small": lambda: fashion_mnist.model_config("vit_small"),
    "fmnist_resnet": lambda: fashion_mnist.model_config("resnet"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="ViT-S_16",
                      help=f"a name of configs/models.py or a study model: {', '.join(STUDY_MODELS)}")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--res", type=int, default=224)
  parser.add_argument("--dtype", choices=sorted(_JAX_DTYPES), default="float32",
                      help="compute dtype; parameters and the optimizer state stay float32")
  parser.add_argument("--mode", choices=("infer", "grad", "train"), default="infer",
                      help="grad: the loss's gradient alone (no update), to set against infer's forward")
  parser.add_argument("--peer", choices=("none", "timm"), default="none")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
  parser.add_argument("--warmup", type=int, default=2, help="untimed runs after compiling")
  parser.add_argument("--iters", type=int, default=1, help="steps per timed run")
  parser.add_argument("--pause", type=float, default=0.25,
                      help="seconds of rest before each timed run, so that the threads of the run "
                           "before (OpenMP's spin-waiting ones in torch) are idle")
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--scan", action=argparse.BooleanOptionalAction, default=False)
  parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=False)
  parser.add_argument("--fused_attention", action=argparse.BooleanOptionalAction, default=False)
  parser.add_argument("--accum_steps", type=int, default=1,
                      help="micro-batches per train step (gradient accumulation)")
  parser.add_argument("--donate", action=argparse.BooleanOptionalAction, default=True,
                      help="donate the train state to the step (updated in place)")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="model config override, e.g. transformer.num_layers=2 (repeatable)")
  parser.add_argument("--compiler_option", action="append", default=[], metavar="KEY=VALUE",
                      help="XLA option for this step's compilation only, e.g. "
                           "xla_cpu_use_onednn=true (repeatable; XLA_FLAGS sets them process-wide)")
  parser.add_argument("--peak_size", type=int, default=0,
                      help="matmul size n (n x n @ n x n) for the peak; 0: 2048 on CPU, 8192 else")
  parser.add_argument("--compile_only", action="store_true",
                      help="only lower and compile for abstract inputs; report the compile time")
  parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: the CPU count")
  parser.add_argument("--peer_omp_wait_policy", choices=("PASSIVE", "default"), default="PASSIVE",
                      help="OMP_WAIT_POLICY for torch, set before it loads. PASSIVE (idle OpenMP "
                           "threads sleep at once) gave timm its best figures on the 2-core CPU of "
                           "benchmarks/RESULTS.md (ViT-S/16 forward 16.7 vs 14.0 img/s, train 5.07 "
                           "vs 4.68); 'default' leaves it unset (threads spin a while first).")
  parser.add_argument("--host_devices", type=int, default=1,
                      help="CPU only: XLA host devices with the batch split over them (a data mesh); "
                           "0: one per core, dividing the batch (vit_jax/cpu_devices.py)")
  parser.add_argument("--reuse_freed_memory", action=argparse.BooleanOptionalAction, default=True,
                      help="CPU only: malloc keeps freed blocks for reuse (vit_jax/host_memory.py, "
                           "vit_jax's default; process-wide, so timm gets it too)")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object on stdout (the summary line goes to stderr)")
  args = parser.parse_args(argv)
  if args.mode == "grad" and args.peer != "none":
    parser.error("--mode=grad has no peer: compare it with --mode=infer of the same model instead")
  return args


def model_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  config = STUDY_MODELS[args.model]() if args.model in STUDY_MODELS else model_configs.get_model_config(
      args.model)
  config.update(dtype=args.dtype, scan=args.scan, remat=args.remat,
                fused_attention=args.fused_attention, num_classes=args.num_classes)
  for item in args.override:
    common.set_override(config, *common.parse_override(item), where="the model config")
  return config


def compiler_options(args: argparse.Namespace) -> dict[str, bool | int | str]:
  options = {}
  for item in args.compiler_option:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--compiler_option {item!r} is not KEY=VALUE (e.g. xla_cpu_use_onednn=true).")
    if value.lower() in ("true", "false"):
      value = value.lower() == "true"
    elif value.lstrip("-").isdigit():
      value = int(value)
    options[key.removeprefix("--")] = value
  return options


def train_config(model: ml_collections.ConfigDict, args: argparse.Namespace) -> ml_collections.ConfigDict:
  """The shared defaults (AdamW, clipping, cosine schedule, softmax cross-entropy) around `model`."""
  config = common.get_config()
  config.model = model
  config.dataset.num_classes = model.num_classes
  config.dataset.image_size = args.res
  config.batch_size = args.batch
  config.optimizer.accum_steps = args.accum_steps
  return config


def matmul_peak(dtype: str, size: int, options: dict | None = None) -> tuple[Callable[[], Any], float]:
  """A run of jitted [size, size] @ [size, size] products in `dtype` that lasts about 0.2 s, and its
  FLOPs: timed best-of-several, this is the peak that MFU is measured against."""
  a = jax.random.normal(jax.random.key(1), (size, size), _JAX_DTYPES[dtype])
  b = jax.random.normal(jax.random.key(2), (size, size), _JAX_DTYPES[dtype])
  matmul = jax.jit(lambda a, b: a @ b).lower(a, b).compile(compiler_options=options or None)
  matmul(a, b).block_until_ready()
  start = time.perf_counter()
  matmul(a, b).block_until_ready()
  # Enough products per run that dispatch does not count on fast devices.
  calls = max(1, min(200, int(0.2 / max(time.perf_counter() - start, 1e-6))))

  def run() -> None:
    jax.block_until_ready([matmul(a, b) for _ in range(calls)])

  return run, 2 * size**3 * calls


def _compiled_memory(compiled: Any) -> int | None:
  """Bytes the compiled step needs on the device: arguments + outputs + temporaries - aliased."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Not every backend implements it.
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def mesh_shardings(args: argparse.Namespace) -> tuple[NamedSharding, NamedSharding]:
  """(replicated, batch-split) shardings over the `--host_devices` CPU devices (one device elsewhere)."""
  count = 1
  if jax.default_backend() == "cpu":
    count = args.host_devices or cpu_devices.host_device_count([args.batch], jax.device_count())
  mesh = Mesh(np.asarray(jax.devices()[:count]), ("data",))
  return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def _jitted_step(args: argparse.Namespace) -> tuple[Any, Callable[[], Any], Any, dict]:
  """The jitted step of `--mode`, its state's init function, and abstract (state, batch) inputs."""
  config = train_config(model_config(args), args)
  model = steps.create_model(config)
  replicated, split = mesh_shardings(args)
  images = jax.ShapeDtypeStruct((args.batch, args.res, args.res, 3), jnp.float32, sharding=split)
  labels = jax.ShapeDtypeStruct((args.batch, config.dataset.num_classes), jnp.float32, sharding=split)
  init_params = lambda: steps.init_train_state(config, model, optax.identity(), jax.random.key(0)).params
  if args.mode == "train":
    tx = steps.create_optimizer(config, model)
    init = lambda: steps.init_train_state(config, model, tx, jax.random.key(0))
    step = jax.jit(steps.make_train_step(model, tx, config), out_shardings=replicated,
                   donate_argnums=(0,) if args.donate else ())
    batch = {"image": images, "label": labels}
  elif args.mode == "grad":
    init, loss_fn = init_params, losses.loss_fn(config.loss)  # the train step's loss

    def loss(params, batch):
      logits = model.apply({"params": params}, batch["image"], train=True,
                           rngs={"dropout": jax.random.key(0)})
      return jnp.mean(loss_fn(logits, batch["label"]))

    step = jax.jit(jax.grad(loss), out_shardings=replicated)
    batch = {"image": images, "label": labels}
  else:
    init = init_params
    step = jax.jit(lambda params, batch: model.apply({"params": params}, batch["image"], train=False),
                   out_shardings=replicated)
    batch = {"image": images}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          jax.eval_shape(init))
  return step, jax.jit(init, out_shardings=replicated), abstract, batch


def jax_benchmark(args: argparse.Namespace) -> tuple[Callable[[], Any] | None, dict]:
  """Compiles the step; returns a function that runs `--iters` steps and blocks, and facts about it."""
  step, init, abstract_state, batch = _jitted_step(args)
  start = time.perf_counter()
  lowered = step.lower(abstract_state, batch)
  lower_seconds = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=compiler_options(args) or None)
  facts = {"lower_seconds": lower_seconds,
           "compile_seconds": time.perf_counter() - start - lower_seconds,
           "flops_per_step": metrics.compiled_flops(compiled),
           "compiled_memory_bytes": _compiled_memory(compiled),
           "num_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(
               abstract_state.params if args.mode == "train" else abstract_state)))}
  facts["compiled_flops_per_step"] = facts["flops_per_step"]
  if args.scan or args.remat or batch["image"].sharding.num_devices > 1:
    # MFU counts the model's FLOPs: XLA's cost analysis counts a scanned body once (not once per
    # layer), counts remat's recomputation, and counts one device's share of a split batch, so count
    # the plain unrolled step (lowered, not compiled: before the batch is split).
    plain = argparse.Namespace(**{**vars(args), "scan": False, "remat": False})
    plain_step, _, plain_state, _ = _jitted_step(plain)
    facts["flops_per_step"] = metrics.compiled_flops(plain_step.lower(plain_state, batch))
  if args.compile_only:
    return None, facts

  state = init()
  rng = np.random.default_rng(0)
  data = {"image": rng.uniform(-1, 1, batch["image"].shape).astype(np.float32)}
  if "label" in batch:
    num_classes = batch["label"].shape[-1]
    data["label"] = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, args.batch)]
  data = jax.device_put(data, batch["image"].sharding)
  holder = [state]

  def run() -> None:
    out = None
    for _ in range(args.iters):
      if args.mode == "train":
        holder[0], out = compiled(holder[0], data)
      else:
        out = compiled(holder[0], data)
    jax.block_until_ready((holder[0], out))

  return run, facts


def timm_benchmark(args: argparse.Namespace,
                   config: ml_collections.ConfigDict) -> tuple[Callable[[], Any], dict]:
  """The same shape in timm (same batch, resolution, dtype, threads): `torch.inference_mode` for
  inference, forward + backward + gradient clipping + AdamW for training."""
  if "torch" not in sys.modules and args.peer_omp_wait_policy != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", args.peer_omp_wait_policy)  # Read once, when torch loads.
  try:  # The [bench] extra: never imported by the core package.
    import timm  # pylint: disable=unused-import
    from timm.models.vision_transformer import VisionTransformer
    import torch
  except ModuleNotFoundError as e:
    raise SystemExit(f"--peer=timm needs torch and timm ({e.name} is missing): "
                     "pip install -e '.[bench]'") from e

  if config.resnet is not None or config.classifier not in ("token", "gap"):
    raise ValueError(f"--peer=timm supports plain ViTs with classifier token|gap, not {args.model}.")
  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
  t = config.transformer
  model = VisionTransformer(
      img_size=args.res, patch_size=config.patches.size[0], embed_dim=config.hidden_size,
      depth=t.num_layers, num_heads=t.num_heads, mlp_ratio=t.mlp_dim / config.hidden_size,
      num_classes=config.num_classes, global_pool="token" if config.classifier == "token" else "avg",
      class_token=config.classifier == "token", drop_rate=t.dropout_rate,
      attn_drop_rate=t.attention_dropout_rate).to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
  x = torch.rand(args.batch, 3, args.res, args.res, device=device) * 2 - 1
  y = torch.randint(0, config.num_classes, (args.batch,), device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if args.mode == "train":
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1)

    def step() -> None:
      opt.zero_grad(set_to_none=True)
      with autocast:
        loss = torch.nn.functional.cross_entropy(model(x), y)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
  else:
    model.eval()

    def step() -> None:
      with torch.inference_mode(), autocast:
        model(x)

  def run() -> None:
    for _ in range(args.iters):
      step()
    sync()

  return run, {"peer_versions": {"torch": torch.__version__, "timm": timm.__version__},
               "peer_device": device, "peer_threads": torch.get_num_threads(),
               "peer_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}


def time_interleaved(runs: dict[str, Callable[[], Any]], repeats: dict[str, int], warmup: int,
                     pause: float = 0.) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """Wall and process CPU seconds of `repeats[name]` calls of each run, taking turns (in an order
  reversed every round) so that all runs see the same machine load; each call follows `pause`
  seconds of rest."""
  for run in runs.values():
    for _ in range(warmup):
      run()
  wall, cpu = {name: [] for name in runs}, {name: [] for name in runs}
  for round_index in range(max(repeats.values())):
    names = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
    for name in names:
      if len(wall[name]) < repeats[name]:
        time.sleep(pause)
        start, start_cpu = time.perf_counter(), time.process_time()
        runs[name]()
        wall[name].append(time.perf_counter() - start)
        cpu[name].append(time.process_time() - start_cpu)
  return wall, cpu


def benchmark(args: argparse.Namespace) -> dict:
  device, options = jax.devices()[0], compiler_options(args)
  result = {
      "model": args.model, "mode": args.mode, "batch": args.batch, "res": args.res,
      "dtype": args.dtype, "scan": args.scan, "remat": args.remat,
      "fused_attention": args.fused_attention, "donate": args.donate,
      "accum_steps": args.accum_steps, "overrides": args.override,
      "compiler_options": options,
      "device": device.device_kind, "backend": jax.default_backend(), "jax_version": jax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "host_devices": len(mesh_shardings(args)[0].mesh.devices.flat),
      "reuse_freed_memory": args.reuse_freed_memory,
  }
  run, facts = jax_benchmark(args)
  result.update(facts)
  if args.compile_only:
    return result

  peak_size = args.peak_size or (2048 if jax.default_backend() == "cpu" else 8192)
  runs = {"vit_jax": run}
  runs["matmul"], matmul_flops = matmul_peak(args.dtype, peak_size)
  if options:  # The peak is the better of XLA's defaults and the step's options.
    runs["matmul_options"], _ = matmul_peak(args.dtype, peak_size, options)
  if args.peer == "timm":
    runs["timm"], peer_facts = timm_benchmark(args, model_config(args))
    result.update(peer_facts)
  # The matmul takes turns with the models: its best run is the peak under the load they all saw.
  repeats = {name: max(args.repeats, 3) if name.startswith("matmul") else args.repeats
             for name in runs}
  load_before = os.getloadavg()[0]
  seconds, cpu_seconds = time_interleaved(runs, repeats, args.warmup, args.pause)
  # Other processes' load: on a shared CPU it slows all runs, and torch's OpenMP far more than XLA.
  result["load_average"] = [load_before, os.getloadavg()[0]]

  images = args.batch * args.iters
  ips = [images / s for s in seconds["vit_jax"]]
  peaks = [matmul_flops / min(s) for s in zip(*(v for k, v in seconds.items()
                                                  if k.startswith("matmul")))]
  result.update(images_per_second=statistics.median(ips), images_per_second_runs=ips,
                peak_flops_per_second=max(peaks), peak_flops_per_second_runs=peaks,
                peak_matmul_size=peak_size)
  flops = facts["flops_per_step"]
  result["flops_per_image"] = flops / args.batch if flops else None
  result["achieved_flops_per_second"] = flops * result["images_per_second"] / args.batch if flops else None
  result["mfu"] = result["achieved_flops_per_second"] / max(peaks) if flops else None
  # Against the matmul of the same round, which saw nearly the same load: steadier on a busy machine.
  result["mfu_paired_median"] = statistics.median(
      flops * i / args.batch / p for i, p in zip(ips, peaks)) if flops else None
  if jax.default_backend() == "cpu" and flops:
    # CPU time counts the work, not the waiting for a core: on a shared CPU, the FLOPs per CPU-second
    # of the model over those of the matmul are a load-independent reading of MFU.
    per_cpu_second = lambda name, work: work / statistics.median(cpu_seconds[name])
    result["mfu_cpu_time"] = (per_cpu_second("vit_jax", flops * args.iters)
                              / per_cpu_second("matmul", matmul_flops))
  stats = device.memory_stats() or {}
  result["peak_memory_bytes"] = stats.get("peak_bytes_in_use")
  if "timm" in seconds:
    peer_ips = [images / s for s in seconds["timm"]]
    result.update(peer="timm", peer_images_per_second=statistics.median(peer_ips),
                  peer_images_per_second_runs=peer_ips)
    result["ratio_vs_peer"] = result["images_per_second"] / result["peer_images_per_second"]
    # The ratio of each alternating pair, whose two runs saw nearly the same machine load.
    result["ratio_vs_peer_paired_median"] = statistics.median(
        a / b for a, b in zip(ips, peer_ips))
    if jax.default_backend() == "cpu":  # Counts spin-waiting too: compare with PASSIVE OpenMP.
      result["ratio_vs_peer_cpu_time"] = (statistics.median(cpu_seconds["timm"])
                                          / statistics.median(cpu_seconds["vit_jax"]))
  return result


def summary(r: dict) -> str:
  what = (f"{r['model']} {r['mode']} batch {r['batch']} res {r['res']} {r['dtype']}"
          f"{' scan' if r['scan'] else ''}{' remat' if r['remat'] else ''}"
          f"{' fused' if r['fused_attention'] else ''} on {r['device']}")
  line = f"{what}: compile {r['compile_seconds']:.2f} s"
  if "images_per_second" not in r:
    return line
  line += f", {r['images_per_second']:.2f} img/s"
  if r["mfu"] is not None:
    line += (f", {r['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s of a measured "
             f"{r['peak_flops_per_second'] / 1e9:.1f} peak (MFU {r['mfu']:.1%})")
  if r.get("mfu_cpu_time") is not None:
    line += f", by CPU time {r['mfu_cpu_time']:.1%}"
  if r.get("peak_memory_bytes"):
    line += f", peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB"
  if "ratio_vs_peer" in r:
    line += (f"; timm {r['peer_images_per_second']:.2f} img/s, "
             f"vit_jax/timm {r['ratio_vs_peer']:.2f}x (paired {r['ratio_vs_peer_paired_median']:.2f}x"
             + (f", by CPU time {r['ratio_vs_peer_cpu_time']:.2f}x" if "ratio_vs_peer_cpu_time" in r else "")
             + ")")
  return line


def set_host_devices(args: argparse.Namespace) -> None:
  """Before JAX initialises: `--host_devices` CPU devices (0: vit_jax's default for the batch)."""
  if args.host_devices == 0:
    cpu_devices.use_host_devices([args.batch])
  elif args.host_devices > 1 and not cpu_devices.accelerator_possible():
    jax.config.update("jax_num_cpu_devices", args.host_devices)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  set_host_devices(args)
  if args.reuse_freed_memory:
    host_memory.reuse_freed_memory_on_cpu()
  result = benchmark(args)
  report.report(result, summary(result), as_json=args.json)


if __name__ == "__main__":
  main()
