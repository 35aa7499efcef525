"""(e) and (g): the student's training loader alone, no model: decoding every epoch or once, PIL or batched augmentation."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from benchmarks.speed.common import log, student_sampler, student_threads
from lfme.data import ImageDataset, build_transform, fixed_size_step
from rundir.config import Config
from rundir.data import make_loader
from rundir.layout import load_split


def measure_decoding(config: Config, rounds: int) -> dict:
    """(e): one epoch of the student's training loader alone, images decoded every epoch vs once.

    The distill stage's loader (`rundir.data.make_loader`, augmenting
    transform, the distill batch size, in this process) over the run's
    training set, iterated without a model; rounds alternate the order.
    Decoding once costs a pass over the images when the loader is made
    (`decode_s`), repaid from the first epoch on.
    """
    train = load_split(config.run_dir, config.data).train
    epoch_s: dict[str, list[float]] = {"every_epoch": [], "once": []}
    decode_s = 0.0
    for r in range(rounds):
        for mode in ("every_epoch", "once") if r % 2 == 0 else ("once", "every_epoch"):
            data = dataclasses.replace(config.data, decode_once=mode == "once", loader_workers=0)
            start = time.perf_counter()
            loader = make_loader(train, data, True, config.distill.batch_size)
            made = time.perf_counter()
            for _ in loader:
                pass
            epoch_s[mode].append(time.perf_counter() - made)
            if mode == "once":
                decode_s = made - start
            log(f"(e) round {r + 1}/{rounds}: loader epoch, decode {mode.replace('_', ' ')}: {epoch_s[mode][-1]:.2f} s")
    every, once = (statistics.median(epoch_s[mode]) for mode in ("every_epoch", "once"))
    return {"images": len(train), "rounds": rounds, "epoch_s": epoch_s, "every_epoch_s": every, "once_s": once, "decode_s": decode_s, "speedup": every / once}


def student_loaders(config: Config) -> tuple[dict[str, torch.utils.data.DataLoader], int]:
    """(g)'s two loaders over the run's training images, decoded when made, and the sampler's length.

    "pil": PIL transforms on decoded images (`ImageDataset` + `build_transform`);
    "batched": `make_loader` with decode_once (the batch transform on uint8 pixels).
    """
    split, data, batch_size = load_split(config.run_dir, config.data), config.data, config.distill.batch_size
    sampler = student_sampler(config, split)
    decoded = split.train.decoded(fixed_size_step(data.transform, data.image_size))
    loaders = {
        "pil": torch.utils.data.DataLoader(
            ImageDataset(decoded, build_transform(data.transform, train=True, image_size=data.image_size)),
            batch_size=batch_size,
            sampler=sampler,
        ),
        "batched": make_loader(
            split.train, dataclasses.replace(data, decode_once=True, loader_workers=0), True, batch_size, sampler=sampler
        ),
    }
    return loaders, len(sampler)


def measure_loader(config: Config, rounds: int) -> dict:
    """(g): ms per batch of the student's training loader, PIL transforms on decoded images vs batched.

    Both over the run's training images, decoded when the loaders are made
    (not timed), with the student's sampler and batch size, iterated without
    a model in this process at the student's thread count; rounds alternate
    the order.
    """
    loaders, images = student_loaders(config)
    threads, previous = student_threads(config), torch.get_num_threads()
    torch.set_num_threads(threads)  # the batch transform's tensor ops use them, as in the student's worker
    epoch_s: dict[str, list[float]] = {name: [] for name in loaders}
    try:
        for r in range(rounds):
            for name in list(loaders) if r % 2 == 0 else list(loaders)[::-1]:
                start = time.perf_counter()
                for _ in loaders[name]:
                    pass
                epoch_s[name].append(time.perf_counter() - start)
            log(f"(g) round {r + 1}/{rounds}: loader epoch, " + ", ".join(f"{name} {epoch_s[name][-1]:.2f} s" for name in loaders))
    finally:
        torch.set_num_threads(previous)
    batches = len(loaders["batched"])
    ms = {name: 1000 * statistics.median(times) / batches for name, times in epoch_s.items()}
    return {
        "images": images,
        "batches": batches,
        "batch_size": config.distill.batch_size,
        "threads": threads,
        "rounds": rounds,
        "epoch_s": epoch_s,
        "ms_per_batch": ms,
        "speedup": ms["pil"] / ms["batched"],
    }


def loader_shares(loader: dict, precision: dict) -> dict:
    """(g): each loader's share of a student step of every arch and precision of (f).

    (f)'s steps ran the batched loader: compute = step - batched, and a
    loader's share = its ms / (its ms + compute).
    """
    shares = {}
    for arch, a in precision["archs"].items():
        for name, mode in a["modes"].items():
            compute = mode["ms_per_step"] - loader["ms_per_batch"]["batched"]
            shares.setdefault(arch, {})[name] = {
                "step_ms": mode["ms_per_step"],
                "compute_ms": compute,
                **{kind: ms / (ms + compute) for kind, ms in loader["ms_per_batch"].items()},
            }
    return shares
