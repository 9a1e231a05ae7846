"""lcdata_train: continual pretraining of LLaMA models on lcdata shards (`pip install lcdata[train]`).

The thin training companion of `lcdata` (which never imports torch; this package imports lcdata, not the
other way). Pipeline: shards -> `data.ShardDataset` / `data.ShardLoader` (memory-mapped, rank-sharded,
exact resume) -> `model.Llama` (Hugging Face LLaMA-compatible) with `attention.attention` (the one GPU
seam: flash-attn / SDPA / varlen, exact CPU fallback) and `loss.chunked_cross_entropy` -> `train.train`
(AdamW, grad accumulation, FSDP2 or DDP via `distributed`, checkpoints in `checkpoint` and, sharded,
in `sharded`; the memory estimate in `memory`).

    python -m lcdata_train train --shards out/shards --model debug --lr 1e-3 --batch-tokens 16384 \\
        --tokens 2M --out runs/debug

    >>> from lcdata_train.config import TrainConfig
    >>> from lcdata_train.train import train  # doctest: +SKIP
    >>> train(TrainConfig(shards="out/shards", out="runs/a", model="debug", lr=1e-3,
    ...                   batch_tokens=16384, tokens="2M"))  # doctest: +SKIP

Importing the package imports nothing heavy; submodules other than `config` and `cli` import torch.
See docs/train.md.
"""

__version__ = "0.1.0"
