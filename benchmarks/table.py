"""Markdown table of the JSON results that `benchmarks/{cpu,gpu}.sh` wrote, one row per file.

  python -m benchmarks.table DIR ROW [ROW ...]   (reads DIR/ROW.json, as throughput.py --json wrote it)
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # runnable without installing

from vit_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def _fmt(value: float | None, spec: str) -> str:
  return "-" if value is None else spec.format(value)


def row_line(name: str, r: dict) -> str:
  if "images_per_second" not in r:  # --compile_only
    return f"| {name} | {r['batch']} | - | - | - | - | {r['compile_seconds']:.1f} | - | - | - |"
  achieved = r["achieved_flops_per_second"]
  sheet = metrics.peak_flops_of_kind(r["device"])  # the data sheet's, next to the measured one
  memory = r.get("peak_memory_bytes")
  ratio = r.get("ratio_vs_peer")
  paired = r.get("ratio_vs_peer_paired_median")
  return (f"| {name} | {r['batch']} | {r['images_per_second']:.2f} "
          f"| {_fmt(achieved and achieved / 1e9, '{:.1f}')} | {_fmt(r['mfu'], '{:.1%}')} "
          f"| {_fmt(achieved / sheet if sheet and achieved else None, '{:.1%}')} "
          f"| {r['compile_seconds']:.1f} | {_fmt(memory and memory / 2**30, '{:.2f}')} "
          f"| {_fmt(r.get('peer_images_per_second'), '{:.2f}')} "
          f"| {_fmt(ratio, '{:.2f}x')}{_fmt(paired, ' ({:.2f}x)') if paired else ''} |")


def main(directory: str, rows: list[str]) -> None:
  print("| row | batch | img/s | GFLOP/s | MFU (measured matmul peak) | MFU (data sheet) | compile s "
        "| peak memory GiB | timm img/s | vit_jax/timm (paired) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  device, peer, peak = None, None, 0.
  for row in rows:
    path = pathlib.Path(directory, f"{row}.json")
    if not path.exists():
      print(f"| {row} | failed (see {directory}/{row}.log) |||||||||")
      continue
    r = json.loads(path.read_text().strip().splitlines()[-1])
    device = (r["device"], r["jax_version"])
    peak = max(peak, r.get("peak_flops_per_second", 0.))
    peer = r.get("peer_versions") or peer
    print(row_line(row, r))
  if device:
    print(f"\nDevice {device[0]}, jax {device[1]}, peer {peer}; best measured matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s (each row's MFU is against its own run's measurement).")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
