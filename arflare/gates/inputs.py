"""The gates that look at model inputs: a grid of samples and the normalisation of the inputs.

Both build the datasets exactly as a run does (input mode, image size, history, label class)
without augmentation, so they show what the model sees. They import torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arflare._image_grid import flare_class, write_image_grid
from arflare.gates.report import GateResult

SEED = 0  # fixed: two checks of the same data show the same samples


def model_inputs(spec, index) -> dict:
    """The un-augmented train/val/test datasets of ``spec``, as a run builds them."""
    from arflare.builders import build_datasets

    plain = spec.model_copy(update={"data": spec.data.model_copy(update={"augment": type(spec.data.augment)()})})
    return build_datasets(plain, index)


def first_frame(image) -> np.ndarray:
    """The 2-D picture of an item's ``image``: its only channel, or the current frame (channel/time 0)."""
    array = image.numpy()
    while array.ndim > 2:
        array = array[0]
    return array


def samples_grid(datasets: dict, folder: Path, *, per_class: int, input_mode: str) -> GateResult:
    """A grid of ``per_class`` frames per class per split, with key, AR, time and label."""
    rng = np.random.default_rng(SEED)
    images, captions, labels = [], [], []
    for split, dataset in datasets.items():
        table = dataset.frame_table
        for cls in (0, 1):
            rows = np.flatnonzero(dataset.labels == cls)
            chosen = np.sort(rng.choice(rows, min(per_class, len(rows)), replace=False)) if len(rows) else []
            labels.append(f"{split} {'flare' if cls else 'quiet'}")
            for i in range(per_class):
                if i < len(chosen):
                    row = table.iloc[chosen[i]]
                    images.append(first_frame(dataset[int(chosen[i])]["image"]))
                    captions.append(f"AR {row['ar']} {row['timestamp']:%Y-%m-%d %H:%M}\n"
                                    f"{flare_class(row['reg_label'])} (label {cls})")
                else:
                    images.append(None)
                    captions.append("")
    path = write_image_grid(images, captions, folder / "samples.png", columns=per_class, row_labels=labels,
                            title=f"model inputs ({input_mode}, channel/frame 0, no augmentation), "
                                  f"{per_class} random per class per split")
    return GateResult("samples", "PASS", f"{len(images)} cells written to samples.png ({per_class} per class per split)",
                      {"per_class": per_class}, figures=(path.name,))


def normalisation(datasets: dict, *, samples: int, max_mean_shift: float) -> GateResult:
    """Per-channel mean and std of model inputs on a sample of train and val; WARN on a shift."""
    stats = {}
    for split in ("train", "val"):
        dataset = datasets[split]
        rows = np.sort(np.random.default_rng(SEED).choice(len(dataset), min(samples, len(dataset)), replace=False))
        batch = np.stack([dataset[int(i)]["image"].numpy() for i in rows])
        flat = batch.reshape(len(rows), -1, batch.shape[-2] * batch.shape[-1])  # (N, channels or frames, pixels)
        channels = flat.transpose(1, 0, 2).reshape(flat.shape[1], -1)
        stats[split] = {"samples": len(rows), "mean": channels.mean(1).round(5).tolist(),
                        "std": channels.std(1).round(5).tolist(), "min": float(channels.min()),
                        "max": float(channels.max())}
    train, val = stats["train"], stats["val"]
    shifts = [abs(v - t) / s if s > 0 else 0.0 for t, v, s in zip(train["mean"], val["mean"], train["std"])]
    status = "WARN" if max(shifts) > max_mean_shift else "PASS"
    summary = (f"train mean {_fmt(train['mean'])} std {_fmt(train['std'])}, val mean {_fmt(val['mean'])} std "
               f"{_fmt(val['std'])} ({train['samples']}/{val['samples']} inputs); largest val shift "
               f"{max(shifts):.2f} train std (WARN above {max_mean_shift:g})")
    return GateResult("normalisation", status, summary, {**stats, "shift_in_train_std": shifts})


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
