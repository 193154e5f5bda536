"""Training inputs: synthetic batches on the device, or shards read from a directory.

Synthetic (the default) measures the cluster's compute and interconnect: one
batch is made on the device once and every step reuses it, so no step waits
for input. ``--data DIR`` reads the same kind of samples from files (the
shared filesystem) through a DataLoader with worker processes, pinned memory
on CUDA and prefetching, as a training job would; when storage or the host
cannot keep up, throughput drops below the synthetic figure and the time the
loop spent waiting for the loader is reported as ``data_wait_s``.

Both paths feed the model the same stored form (uint8 images, int32 token
ids) and convert it on the device in the step (:func:`model_inputs`), so the
compute is identical and only the loading differs.

Dataset format (``--make-dataset DIR`` writes it with random contents)::

    DIR/<workload>/meta.json          {"format": "kiln-models-shard", "version": 1,
                                       "model", "family", "input_shape", "samples",
                                       "shards": [[file, samples], ...]}
    DIR/<workload>/shard-00000.pt     torch.save of a dict of tensors, first dim = samples:
        resnet: pixel_values uint8 [n, 3, H, W], labels int64 [n]
        bert:   input_ids int32 [n, S], labels int32 [n, S] (-100 = not masked),
                next_sentence_label int64 [n]

Shards are loaded with ``torch.load(mmap=True, weights_only=True)``, so a
sample's bytes are read from the filesystem when a worker touches them. Rank
``r`` of ``W`` reads shards ``r, r+W, ...`` (all shards when there are fewer
than ``W``). Runs longer than a rank's share start over, and the second pass
may come from the page cache: make the dataset larger than
``W * batch * (warmup + steps)`` samples to measure the filesystem itself.
``meta.json`` is written last, so an interrupted ``--make-dataset`` leaves a
directory that ``--data`` rejects.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from validation.models.presets import Workload

FORMAT = "kiln-models-shard"
FORMAT_VERSION = 1
MASK_FRACTION = 0.15  # BERT's masked-LM rate: the share of positions with a label

Batch = dict[str, torch.Tensor]


def synthetic_batch(
    workload: Workload, n: int, device: torch.device | str = "cpu", seed: int = 0
) -> Batch:
    """``n`` random samples in the stored form, made on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    kw: dict[str, Any] = {"generator": gen, "device": device}
    if workload.family == "resnet":
        return {
            "pixel_values": torch.randint(
                0, 256, (n, *workload.input_shape), dtype=torch.uint8, **kw
            ),
            "labels": torch.randint(0, workload.num_labels, (n,), dtype=torch.int64, **kw),
        }
    shape = (n, workload.seq_len)
    ids = torch.randint(0, workload.vocab_size, shape, dtype=torch.int32, **kw)
    masked = torch.rand(shape, **kw) < MASK_FRACTION
    return {
        "input_ids": ids,
        "labels": torch.where(masked, ids, torch.full_like(ids, -100)),
        "next_sentence_label": torch.randint(0, 2, (n,), dtype=torch.int64, **kw),
    }


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Copy a loader batch to the device; asynchronous from pinned memory on CUDA."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_inputs(batch: Batch, channels_last: bool = False) -> Batch:
    """The stored form as the model takes it: float images in [-1, 1], int64 ids."""
    out: Batch = {}
    for key, value in batch.items():
        if key == "pixel_values":
            value = value.float().div_(127.5).sub_(1.0)
            if channels_last:
                value = value.contiguous(memory_format=torch.channels_last)
        elif value.dtype != torch.int64:
            value = value.long()
        out[key] = value
    return out


def make_dataset(
    root: str | Path, workloads: tuple[Workload, ...], samples: int, shard_samples: int = 256
) -> list[Path]:
    """Write ``samples`` random samples per workload as shards; returns the meta files."""
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    if shard_samples < 1:
        raise ValueError(f"--shard-samples must be at least 1, got {shard_samples}")
    metas = []
    for workload in workloads:
        folder = Path(root) / workload.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        shards = []
        for index, start in enumerate(range(0, samples, shard_samples)):
            n = min(shard_samples, samples - start)
            name = f"shard-{index:05d}.pt"
            torch.save(synthetic_batch(workload, n, seed=index), folder / name)
            shards.append([name, n])
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": workload.name,
            "family": workload.family,
            "input_shape": workload.input_shape,
            "samples": samples,
            "shards": shards,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        metas.append(folder / "meta.json")
    return metas


class ShardDataset(Dataset):
    """Samples of some shards, indexed across them; each worker opens shards lazily."""

    def __init__(self, files: list[Path], counts: list[int]) -> None:
        self.files = files
        self.ends = [sum(counts[: i + 1]) for i in range(len(counts))]
        self._open: dict[int, Batch] = {}

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, index: int) -> Batch:
        shard = bisect.bisect_right(self.ends, index)
        if shard not in self._open:
            self._open[shard] = torch.load(self.files[shard], mmap=True, weights_only=True)
        offset = index - (self.ends[shard - 1] if shard else 0)
        return {k: v[offset] for k, v in self._open[shard].items()}


def read_meta(root: str | Path, workload: Workload) -> dict[str, Any]:
    """The workload's ``meta.json``, checked against it; ValueError names ``--data``."""
    path = Path(root) / workload.name / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"--data: cannot read {path} ({exc}); write a dataset with --make-dataset"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"--data: {path} is not a {FORMAT} dataset")
    if meta.get("version") != FORMAT_VERSION or meta.get("input_shape") != workload.input_shape:
        raise ValueError(
            f"--data: {path} holds version {meta.get('version')} samples of shape "
            f"{meta.get('input_shape')}; {workload.name} needs version {FORMAT_VERSION}, "
            f"shape {workload.input_shape}"
        )
    return meta


def rank_shards(meta: dict[str, Any], rank: int, world_size: int) -> list[tuple[str, int]]:
    """(file, samples) of the shards rank ``rank`` reads: every ``world_size``-th, or all."""
    shards = [(str(name), int(n)) for name, n in meta["shards"]]
    return shards[rank::world_size] if len(shards) >= world_size else shards


def make_loader(
    root: str | Path,
    workload: Workload,
    batch: int,
    rank: int,
    world_size: int,
    device: torch.device,
    workers: int = 4,
    prefetch: int = 2,
) -> DataLoader:
    """This rank's loader over its share of the shards (see the module docstring)."""
    meta = read_meta(root, workload)
    folder = Path(root) / workload.name
    mine = rank_shards(meta, rank, world_size)
    dataset = ShardDataset([folder / name for name, _ in mine], [n for _, n in mine])
    if len(dataset) < batch:
        raise ValueError(
            f"--data: {folder} gives rank {rank} {len(dataset)} samples, fewer than one "
            f"batch of {batch}; make a larger dataset (--samples)"
        )
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=False,  # sequential reads within a shard, as a streaming loader does
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=workers > 0,
    )


def forever(loader: DataLoader) -> Iterator[Batch]:
    """Batches without end: the loader's epochs back to back."""
    while True:
        yield from loader
