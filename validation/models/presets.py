"""The workloads a preset measures: which model, what input, what per-rank batch.

Models come from ``transformers`` configs with random initialisation, never
from downloaded weights: a throughput benchmark needs the architecture, not
the trained values, and nodes must not reach the Hugging Face Hub (the hub is
switched to offline mode before transformers is imported).

* ``full``, for GPU clusters: ResNet-50 at 224x224 (the torchvision/MLPerf
  architecture, 25,557,032 parameters with 1000 classes) and BERT-large at
  sequence length 128 and 512 (the two phases of NVIDIA's and MLPerf's BERT
  pre-training, so the numbers compare with published ones).
* ``tiny``, for CPU labs and tests: the same model classes shrunk until one
  DDP step on two CPU ranks takes a few tens of milliseconds.

BERT trains with :class:`~transformers.BertForPreTraining` (masked-LM plus
next-sentence heads, 336M parameters for large), not ``BertForMaskedLM``:
it is the model the reference pre-training recipes time, and its pooler and
NSP head get gradients too, so DDP reduces every parameter of the published
parameter count. Standard library only at import time; transformers and torch
are imported when a model is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Workload:
    """One model at one input shape: the unit that gets timed and reported."""

    name: str
    """Key in results and measurement names, e.g. ``bert-large-seq128``."""
    family: str
    """``resnet`` (images and class labels) or ``bert`` (token ids and MLM labels)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the transformers config class."""
    batch: int = 32
    """Default samples per rank per step."""
    image_size: int = 224
    """Image side in pixels (``resnet``)."""
    seq_len: int = 128
    """Tokens per sample (``bert``)."""

    @property
    def hf_class(self) -> str:
        """The transformers model class that is trained."""
        return "ResNetForImageClassification" if self.family == "resnet" else "BertForPreTraining"

    @property
    def input_shape(self) -> list[int]:
        """Shape of one sample: ``[3, H, W]`` or ``[seq_len]``."""
        if self.family == "resnet":
            return [3, self.image_size, self.image_size]
        return [self.seq_len]

    @property
    def num_labels(self) -> int:
        """Classes of the image head."""
        return int(self.config.get("num_labels", 2))

    @property
    def vocab_size(self) -> int:
        """Token ids are drawn below this."""
        return int(self.config.get("vocab_size", 30522))


_BERT_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "vocab_size": 30522,
}

_TINY_RESNET = {
    "num_labels": 10,
    "embedding_size": 16,
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "layer_type": "basic",
}

_TINY_BERT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
    "vocab_size": 1024,
    "max_position_embeddings": 64,
}

#: Preset name -> workloads, in the order they run.
PRESETS: dict[str, tuple[Workload, ...]] = {
    "full": (
        Workload("resnet50", "resnet", {"num_labels": 1000}, batch=256, image_size=224),
        Workload("bert-large-seq128", "bert", _BERT_LARGE, batch=64, seq_len=128),
        Workload("bert-large-seq512", "bert", _BERT_LARGE, batch=16, seq_len=512),
    ),
    "tiny": (
        Workload("resnet-tiny", "resnet", _TINY_RESNET, batch=16, image_size=32),
        Workload("bert-tiny", "bert", _TINY_BERT, batch=8, seq_len=32),
    ),
}


#: Preset name -> default (warm-up steps, timed steps). The full preset's warm-up
#: covers cuDNN autotuning and DDP's bucket rebuild after the first step.
DEFAULT_STEPS: dict[str, tuple[int, int]] = {"full": (10, 30), "tiny": (2, 5)}


def select(preset: str, models: tuple[str, ...] = ()) -> tuple[Workload, ...]:
    """The preset's workloads, or only those named (in the given order).

    Raises ValueError naming the option at fault.
    """
    if preset not in PRESETS:
        raise ValueError(f"--preset: unknown {preset!r}; choose from {', '.join(PRESETS)}")
    known = {w.name: w for w in PRESETS[preset]}
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(
            f"--model: {', '.join(unknown)} not in preset {preset!r}; "
            f"choose from {', '.join(known)}"
        )
    return tuple(known[m] for m in models) if models else PRESETS[preset]


def build_model(workload: Workload) -> Any:
    """A randomly initialised model on the current default device (use ``torch.device``
    as a context manager, ``meta`` to count parameters without allocating them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only; never reach the hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    if workload.family == "resnet":
        config = transformers.ResNetConfig(**workload.config)
        return transformers.ResNetForImageClassification(config)
    config = transformers.BertConfig(**workload.config)
    return transformers.BertForPreTraining(config)


def count_parameters(workload: Workload) -> int:
    """Parameters of the model, counted on the meta device (no memory, no init time)."""
    import torch

    with torch.device("meta"):
        model = build_model(workload)
    return sum(p.numel() for p in model.parameters())
