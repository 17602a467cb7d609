"""Data loading speed and the peak memory of one SOLO training step.

Loader: images per second through the training DataLoader of the built-in data set
(cpu preset, training transforms, batch 8), with 0 and 2 worker processes. The first
``--warmup-batches`` batches (worker start-up included) are not timed; then
``--batches`` batches are, ``--rounds`` times, and the median round is reported.
With workers, up to 2 x workers batches are already prefetched when a round starts,
which flatters short rounds: keep ``--batches`` well above that.

Memory: one training step (forward, targets, loss, backward, gradient clipping, SGD
step) per preset, each in a fresh Python process, so that nothing else the process did
is counted and the allocator starts clean. On a CPU the peak is the process's maximum
resident set size during the steps (VmHWM, reset just before them through
/proc/self/clear_refs, so that loading the data set does not set it; elsewhere
``ru_maxrss`` since the start; tracemalloc does not see torch's allocations); reported
are the peak and its increase over the resident size just before the step, when the
model, optimiser and batch already exist. On CUDA:
``torch.cuda.max_memory_allocated`` and its increase over ``memory_allocated`` before
the step. Two steps run, so the peak includes SGD's momentum buffers.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
import torch
from bench_train import (
    default_batch,
    device_batches,
    quick_config,
    solo_optimizer,
    solo_train_step,
    tiny_dataset,
)

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule, ensure_builtin_dataset

SECTION = "bench_data"
MIB = 2**20


def loader_images_per_second(
    cfg: SOLOConfig, root: Path, workers: int, warmup: int, batches: int, rounds: int
) -> float:
    """Median over `rounds` of images/s while iterating `batches` batches, after `warmup` batches."""
    data = SOLODataModule(cfg.replace(num_workers=workers), root=str(root))
    stream = itertools.chain.from_iterable(itertools.repeat(data.train_dataloader()))
    for _ in range(warmup):
        next(stream)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        images = sum(next(stream)[0].shape[0] for _ in range(batches))
        rates.append(images / (time.perf_counter() - start))
    return common.median(rates)


def resident_bytes() -> int:
    """The process's current resident set size in bytes (Linux /proc; else the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_resident_bytes()


def reset_peak_resident() -> bool:
    """Start the peak resident set size afresh from the current size; False where impossible.

    Linux (4.0+) resets VmHWM when "5" is written to /proc/self/clear_refs. Without it,
    the peak of a training step would include whatever came before it in the process:
    loading and transforming the data set can take more memory than the step itself.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_resident_bytes() -> int:
    """The process's peak resident set size in bytes since the last `reset_peak_resident`
    (VmHWM from /proc); elsewhere since the start (ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def step_memory(spec: dict) -> dict:
    """Peak memory of training steps for `spec` (runs in the child process)."""
    cfg = SOLOConfig(**spec["config"])
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(cfg.seed)
    model, optimizer, _ = solo_optimizer(cfg)
    model.to(device).train()
    batch = device_batches(cfg, Path(spec["root"]), 1, device)[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_peak_resident()  # the data set's loading above is not the step's peak
        before = resident_bytes()
    for _ in range(spec["steps"]):
        solo_train_step(model, optimizer, batch, cfg, spec["amp"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_resident_bytes()
    return {"before": before, "peak": peak}


def measure_in_subprocess(spec: dict) -> dict:
    """`step_memory(spec)` in a fresh Python process; its result comes back as JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"memory measurement for {spec['config']['name']} failed "
            f"(exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="default: 0 2")
    parser.add_argument("--batch-size", type=int, default=8, help="loader batch (default: 8)")
    parser.add_argument("--warmup-batches", type=int, default=3, help="untimed (default: 3)")
    parser.add_argument("--batches", type=int, default=50, help="timed per round (default: 50)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"], choices=["cpu", "paper"])
    parser.add_argument(
        "--paper-batch", type=int, help="paper preset step batch (default: 2 on CPU, 8 on GPU)"
    )
    parser.add_argument("--steps", type=int, default=2, help="training steps measured (default: 2)")
    parser.add_argument("--device", default="cpu", help="where the step runs: cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in the step")
    parser.add_argument("--data-root", help="CIS 680 folder (default: the built-in data set)")
    common.add_common_arguments(
        parser, quick_help="smoke test: 12 images, 2 timed batches, memory of the shrunk cpu preset"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(step_memory(json.loads(args.child))))
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, batches, rounds, steps = args.warmup_batches, args.batches, args.rounds, args.steps
    batch_size, presets = args.batch_size, args.presets
    if args.quick:
        warmup, batches, rounds, steps, batch_size = 1, 2, 1, 1, 2
        presets = ["cpu"]

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            root = tiny_dataset(tmp, 12)
        else:
            root = Path(args.data_root or ensure_builtin_dataset())
        loader_cfg = SOLOConfig.cpu().replace(batch_size=batch_size)
        rates = {
            w: loader_images_per_second(loader_cfg, root, w, warmup, batches, rounds)
            for w in args.workers
        }
        memory_rows = []
        for preset in presets:
            cfg = SOLOConfig.preset(preset)
            batch = default_batch(preset, device)
            if preset == "paper" and args.paper_batch:
                batch = args.paper_batch
            cfg = quick_config(cfg) if args.quick else cfg.replace(batch_size=batch)
            spec = {
                "config": dataclasses.asdict(cfg),
                "device": args.device,
                "amp": args.amp,
                "threads": args.threads,
                "root": str(root),
                "steps": steps,
            }
            result = measure_in_subprocess(spec)
            memory_rows.append(
                [
                    cfg.name,
                    f"{cfg.image_size[0]}x{cfg.image_size[1]}",
                    str(cfg.batch_size),
                    f"{result['before'] / MIB:.0f}",
                    f"{result['peak'] / MIB:.0f}",
                    f"{(result['peak'] - result['before']) / MIB:.0f}",
                ]
            )

    base = rates.get(0)
    rows = [
        [str(w), f"{rate:.1f}", f"{rate / base:.2f}" if base else "-"] for w, rate in rates.items()
    ]
    kind = "CUDA allocated" if device.type == "cuda" else "resident (RSS)"
    memory_header = [
        "preset",
        "input",
        "batch",
        f"{kind} before step, MiB",
        "peak, MiB",
        "peak - before, MiB",
    ]
    notes = (
        f"Training loader of the built-in set, cpu preset ({loader_cfg.image_size[0]}x"
        f"{loader_cfg.image_size[1]}), training transforms, batch {batch_size}; median of "
        f"{rounds} rounds of {batches} batches after {warmup} warm-up batches; main process "
        f"{args.threads} torch threads. Ratio: against 0 workers."
        "\n\n### Peak memory of a training step\n\n"
        f"{common.markdown_table(memory_header, memory_rows)}\n\n"
        f"{steps} training step(s) (forward, targets, loss, backward, clipping, SGD) on "
        f"{args.device}{', bf16 autocast' if args.amp else ''}, each preset in a fresh process. "
        + (
            "Peak: torch.cuda.max_memory_allocated."
            if device.type == "cuda"
            else "Peak: ru_maxrss of the process; before: its resident size once the model, "
            "optimiser and batch exist."
        )
    )
    header = ["loader workers", "images/s", "ratio"]
    common.report(
        common.section_for(SECTION, device),
        f"Data loading and training-step memory (step on {device.type})",
        header,
        rows,
        notes,
        args.results,
        args.quick,
    )


if __name__ == "__main__":
    main()
