"""Evaluation batches read and collated in DataLoader worker processes (pinned for CUDA), in a fixed order, with
worker errors re-raised unchanged in the main process."""

from __future__ import annotations

import pickle
import traceback

import torch
from torch.utils.data import DataLoader, get_worker_info

from read.config import ReadConfig
from read.data.base import Sample
from read.data.collate import collate
from read.model.batch import Batch
from read.model.llava_backbone import clip_image_size, num_image_tokens

__all__ = ["EvalBatches", "EvalCollator", "EvalItem", "WorkerFailure", "eval_loader"]


class EvalCollator:
    """Picklable ``samples -> Batch`` for DataLoader workers: :func:`read.data.collate.collate` with the evaluated
    model's image-token count, CLIP and SAM sizes and prompt format, computed in the main process."""

    def __init__(self, tokenizer, *, num_image_tokens: int, clip_size: int, sam_size: int, use_im_start_end: bool,
                 conv_template: str, sam_frame: str = "longest_side") -> None:
        self.tokenizer = tokenizer
        self.kw = dict(num_image_tokens=num_image_tokens, clip_size=clip_size, sam_size=sam_size,
                       sam_frame=sam_frame,
                       use_im_start_end=use_im_start_end, conv_template=conv_template)

    @classmethod
    def for_model(cls, tokenizer, model, cfg: ReadConfig, conv_template: str) -> EvalCollator:
        """The collator of a built model; a Qwen2.5-VL model gets :class:`read.data.qwen_inputs.QwenCollator` (its
        own ChatML prompt: ``conv_template`` does not apply)."""
        if model.parts.kind == "qwen2_5_vl":
            from read.data.qwen_inputs import QwenCollator

            return QwenCollator.for_model(tokenizer, model, cfg.model.vlm)
        return cls(tokenizer, num_image_tokens=num_image_tokens(model.llava), clip_size=clip_image_size(model.llava),
                   sam_size=model.sam.img_size, sam_frame=model.sam.frame,
                   use_im_start_end=cfg.model.vlm.use_im_start_end,
                   conv_template=conv_template)

    def __call__(self, samples: list[Sample]) -> Batch:
        return collate(samples, self.tokenizer, **self.kw)


class EvalItem:
    """One loaded batch: its dataset indices, their :class:`Sample` (records, overlays) and the collated host
    :class:`Batch` (pinned by the DataLoader when it pins memory)."""

    def __init__(self, indices: list[int], samples: list[Sample], batch: Batch) -> None:
        self.indices, self.samples, self.batch = indices, samples, batch

    def pin_memory(self, device=None) -> EvalItem:  # noqa: ARG002 - DataLoader's pinning hook
        return EvalItem(self.indices, self.samples, self.batch.map_tensors(lambda _, t: t.pin_memory()))


class WorkerFailure:
    """An exception of a worker, carried to the main process as the batch's value and re-raised there unchanged
    (the DataLoader would raise a new one of the same type whose message is the whole worker traceback)."""

    def __init__(self, exc: BaseException, tb: str) -> None:
        self.exc, self.tb = exc, tb

    def reraise(self) -> None:
        raise self.exc from RuntimeError("raised in a DataLoader worker process:\n\n" + self.tb)


class EvalBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``k`` is the ``k``-th evaluation batch, read and collated (in a worker)."""

    def __init__(self, dataset, batches: list[list[int]], collator: EvalCollator) -> None:
        self.dataset, self.batches, self.collator = dataset, batches, collator

    def __len__(self) -> int:
        return len(self.batches)

    def load(self, k: int) -> EvalItem:
        samples = [self.dataset[i] for i in self.batches[k]]
        return EvalItem(list(self.batches[k]), samples, self.collator(samples))

    def __getitem__(self, k: int) -> EvalItem | WorkerFailure:
        if get_worker_info() is None:  # main process: exceptions propagate as they are
            return self.load(k)
        try:
            return self.load(k)
        except Exception as exc:  # noqa: BLE001 - carried to the main process and re-raised there unchanged
            try:  # an exception crosses processes as (type, args): it must be rebuildable from them
                pickle.dumps(exc)
                type(exc)(*exc.args)
            except Exception:  # noqa: BLE001 - not transportable: the DataLoader's own wrapping reports it
                raise exc from None
            return WorkerFailure(exc, traceback.format_exc())


def _no_collate(item):  # an item is already a batch
    return item


def eval_loader(dataset, batches: list[list[int]], collator: EvalCollator, *, workers: int, pin_memory: bool
                ) -> DataLoader:  # noqa: ANN001
    """A DataLoader yielding ``batches`` (lists of dataset indices) in order as :class:`EvalItem` (or a
    :class:`WorkerFailure`), read and collated by ``workers`` processes (0: on this thread)."""
    workers = max(0, min(workers, len(batches)))
    return DataLoader(
        EvalBatches(dataset, batches, collator),
        batch_size=None,  # an item is a whole batch
        shuffle=False,
        collate_fn=_no_collate,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # leave the global RNG untouched by worker seeding
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
