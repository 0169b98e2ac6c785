"""FlareDataset input modes, history lookup, augmentation and class balancing."""

from __future__ import annotations

import math
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from arflare.data.augment import AugmentParams, augment
from arflare.data.datasets import FlareDataset
from arflare.data.index import DataError, build_index
from arflare.data.sampling import BalancedSampler
from arflare.data.shards import ShardWriter

from .conftest import FLOW_SU, FLOW_SV, TINY_SIZE


@pytest.fixture(scope="module")
def index(tiny_shards, tmp_path_factory):
    return build_index(tiny_shards.root, flow_root=tiny_shards.flow_root, progress=False,
                       cache_dir=tmp_path_factory.mktemp("cache"))  # fmt: skip


def frame_ids(image: torch.Tensor) -> list[int]:
    """Which tiny frame(s) an image holds: the bottom-right pixel encodes the frame id."""
    return [round(v) for v in (image[..., -1, -1] * 128).flatten().tolist()]


def item_of(dataset, key_prefix: str, hhmm: str) -> int:
    keys = dataset.frame_table["key"]
    return int(np.flatnonzero(keys.str.startswith(key_prefix) & keys.str.contains(f"_{hhmm}00_"))[0])


def ids_by_time(tiny_shards, ar: str) -> dict[str, int]:
    part = tiny_shards.samples[tiny_shards.samples["ar"] == ar]
    return {t.strftime("%H%M"): i for t, i in zip(part["timestamp"], part["frame_id"], strict=True)}


def test_frame_mode_decodes_field_and_labels(index, tiny_shards):
    dataset = FlareDataset(index, "train", image_size=TINY_SIZE)
    expected = tiny_shards.samples.set_index("key")
    assert len(dataset) == (expected["split"] == "train").sum()
    for i in range(len(dataset)):
        item = dataset[i]
        key = dataset.frame_table["key"][i]
        assert item["image"].shape == (1, TINY_SIZE, TINY_SIZE) and item["image"].dtype == torch.float32
        assert frame_ids(item["image"]) == [expected.loc[key, "frame_id"]]
        assert item["image"][0, 0, 0] == -1.0  # pixel 0 -> -6000 G
        assert item["label"].item() == expected.loc[key, "label"] == dataset.labels[i]
        assert item["index"] == i


def test_min_flare_class_m_counts_only_m_and_x(index):
    c_labels = FlareDataset(index, "train", min_flare_class="C").frame_table
    m_labels = FlareDataset(index, "train", min_flare_class="M").frame_table
    assert set(c_labels.loc[c_labels["label"] == 1, "reg_label"]) == {"C3.4", "M1.2", "X1.0", "C1.1"}
    assert set(m_labels.loc[m_labels["label"] == 1, "reg_label"]) == {"M1.2", "X1.0"}


def test_resize_keeps_zero_field_at_zero(index):
    item = FlareDataset(index, "train", image_size=8)[0]
    assert item["image"].shape == (1, 8, 8)
    assert frame_ids(item["image"]) == [1]


@pytest.mark.parametrize("size", [TINY_SIZE, 8])
def test_flow_mode_scales_vectors_with_the_image(index, tiny_shards, size):
    dataset = FlareDataset(index, "train", mode="flow", image_size=size)
    item = dataset[3]
    fid = frame_ids(item["image"])[0]
    factor = size / TINY_SIZE
    assert item["flow"].shape == (2, size, size)
    assert torch.allclose(item["flow"][0], torch.full((size, size), fid * FLOW_SU * factor))
    assert torch.allclose(item["flow"][1], torch.full((size, size), -fid * FLOW_SV * factor))


def test_flow_mode_raises_when_flow_is_missing(index, tiny_shards):
    with pytest.raises(DataError, match=r"lack optical flow.*\.flow\.npz"):
        FlareDataset(index, "val", mode="flow")
    no_flow = build_index(tiny_shards.root, progress=False)
    with pytest.raises(DataError, match="flow_root"):
        FlareDataset(no_flow, "train", mode="flow")


@pytest.mark.parametrize("mode, shape", [("sequence", (3, 1, 8, 8)), ("multiscale", (3, 8, 8))])
def test_history_frames_come_from_the_same_ar_across_shards(index, tiny_shards, mode, shape):
    dataset = FlareDataset(index, "train", mode=mode, image_size=8, offsets_min=(0, -24, -60))
    ids = ids_by_time(tiny_shards, "1069")
    item = dataset[item_of(dataset, "1069_", "0112")]  # first frame of the second shard
    assert item["image"].shape == shape
    assert frame_ids(item["image"]) == [ids["0112"], ids["0048"], ids["0012"]]


def test_history_uses_nearest_earlier_frame_within_a_cadence(index, tiny_shards):
    dataset = FlareDataset(index, "train", mode="diff", image_size=8)
    ids = ids_by_time(tiny_shards, "1070")  # 1070 has no frame at 01:24
    item = dataset[item_of(dataset, "1070_", "0136")]
    assert item["image"].shape == (2, 8, 8)
    assert frame_ids(item["image"][0]) == [ids["0136"]]
    assert frame_ids(item["image"][1]) == [ids["0136"] - ids["0112"]]  # I_t - I_(01:12)


def test_missing_history_is_padded_from_the_same_ar_not_a_neighbour(index, tiny_shards):
    dataset = FlareDataset(index, "train", mode="sequence", image_size=8, offsets_min=(0, -12, -36))
    ids = ids_by_time(tiny_shards, "1070")  # 1069 does have frames before 1070 starts
    item = dataset[item_of(dataset, "1070_", "0100")]
    assert frame_ids(item["image"]) == [ids["0100"]] * 3


def test_require_complete_history_drops_incomplete_items(index):
    offsets = (0, -24)
    padded = FlareDataset(index, "train", mode="sequence", offsets_min=offsets)
    complete = FlareDataset(index, "train", mode="sequence", offsets_min=offsets, require_complete_history=True)
    dropped = set(padded.frame_table["key"]) - set(complete.frame_table["key"])
    # The first two frames of each AR lack t-24 min; 1070 at 01:48 still has 01:24 +- 12 min.
    assert sorted(k[:29] for k in dropped) == sorted(
        ["1069_hmi.M_720s.20100505_0000", "1069_hmi.M_720s.20100505_0012",
         "1070_hmi.M_720s.20100505_0100", "1070_hmi.M_720s.20100505_0112"])  # fmt: skip
    assert len(complete) == len(complete.labels) == len(padded) - 4
    for i in range(len(complete)):
        ids = frame_ids(complete[i]["image"])
        assert ids[0] != ids[1]  # never padded with the frame itself


def test_dataset_pickles_and_rejects_bad_arguments(index):
    dataset = FlareDataset(index, "val", mode="diff", image_size=8)
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[1]["image"], dataset[1]["image"])
    with pytest.raises(ValueError, match="Unknown input mode 'video'"):
        FlareDataset(index, "val", mode="video")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        FlareDataset(index, "dev")
    with pytest.raises(ValueError, match=r"offsets_min=\[0, 60\]"):
        FlareDataset(index, "val", mode="sequence", offsets_min=(0, 60))


def test_corrupt_png_is_reported_or_skipped(tiny_shards, tmp_path):
    root = tmp_path / "magnetograms"
    shutil.copytree(tiny_shards.root, root)
    key = "1200_hmi.M_720s.20120307_003600_TAI.1.magnetogram_224"  # sorts last in test
    with ShardWriter(root / "test/shard-000001.tar") as sink:
        sink.write(key, {"png": b"\x89PNG not really", "json": b'{"label": 0}'})
    corrupt = build_index(root, progress=False)
    strict = FlareDataset(corrupt, "test", image_size=8, skip_corrupt=False)
    with pytest.raises(DataError, match=rf"shard-000001\.tar, member {key}\.png"):
        strict[3]
    lenient = FlareDataset(corrupt, "test", image_size=8)
    with pytest.warns(UserWarning, match=key):
        item = lenient[3]
    assert item["index"] == 0  # the next readable item, wrapping around


AUG = AugmentParams(hflip=True, vflip=True, rotate_deg=30.0, scale=0.2, polarity_flip=True, noise=2)


def test_augmentation_draws_once_per_sample_for_frames_and_flow():
    frames = torch.rand(1, 1, 16, 16).expand(3, 1, 16, 16)
    flow = torch.rand(1, 2, 16, 16).expand(3, 2, 16, 16)
    for seed in range(5):
        out, out_flow = augment(frames, flow, AUG, torch.Generator().manual_seed(seed))
        assert not torch.allclose(out[0], frames[0])
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
        assert torch.equal(out_flow[0], out_flow[1]) and torch.equal(out_flow[0], out_flow[2])


def test_dataset_augmentation_is_reproducible_and_changes_per_epoch(index):
    dataset = FlareDataset(index, "train", mode="sequence", image_size=TINY_SIZE, offsets_min=(0, -12), augment=AUG)
    item = dataset[5]
    assert torch.equal(FlareDataset(index, "train", mode="sequence", image_size=TINY_SIZE, offsets_min=(0, -12),
                                    augment=AUG)[5]["image"], item["image"])  # fmt: skip
    dataset.set_epoch(1)
    assert not torch.equal(dataset[5]["image"], item["image"])
    dataset.set_epoch(0)
    assert torch.equal(dataset[5]["image"], item["image"])


def test_hflip_mirrors_frames_and_negates_u():
    frames = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    flow = torch.stack([torch.full((4, 4), 1.5), torch.full((4, 4), 0.5)])
    flow[0, 0, 0] = 3.0
    params = AugmentParams(hflip=True)
    for seed in range(20):  # some seeds flip, some do not; check whichever happened
        out, out_flow = augment(frames, flow, params, torch.Generator().manual_seed(seed))
        flipped = torch.equal(out, frames.flip(-1))
        assert flipped or torch.equal(out, frames)
        if flipped:
            assert out_flow[0, 0, -1] == -3.0 and (out_flow[0, 1:] == -1.5).all()
            assert (out_flow[1] == 0.5).all()


def test_polarity_flip_negates_field_not_flow():
    frames = torch.randn(1, 1, 8, 8)
    flow = torch.randn(2, 8, 8)
    results = {augment(frames, flow, AugmentParams(polarity_flip=True), torch.Generator().manual_seed(s))[0][0, 0, 0, 0].item()
               for s in range(20)}  # fmt: skip
    assert results == {frames[0, 0, 0, 0].item(), -frames[0, 0, 0, 0].item()}
    _, same_flow = augment(frames, flow, AugmentParams(polarity_flip=True), torch.Generator().manual_seed(0))
    assert torch.equal(same_flow, flow)


def test_rotation_and_zoom_turn_flow_vectors_with_the_image():
    size, d = 33, torch.tensor([5.0, 2.0])  # a blob moving by (u, v) = d pixels per frame
    frames = torch.stack([_blob(size, 16 - d / 2), _blob(size, 16 + d / 2)])
    flow = d[:, None, None].expand(2, size, size).clone()
    params = AugmentParams(rotate_deg=90.0, scale=0.3)
    for seed in range(5):
        out, out_flow = augment(frames, flow, params, torch.Generator().manual_seed(seed))
        moved = _centroid(out[1, 0]) - _centroid(out[0, 0])
        assert torch.allclose(out_flow[:, 16, 16], moved, atol=0.3), seed
        assert math.isclose(out_flow[:, 16, 16].norm() / d.norm(), moved.norm() / d.norm(), abs_tol=0.05)


def _blob(size, center):
    y, x = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    return torch.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / 8.0)[None]


def _centroid(image):
    y, x = torch.meshgrid(torch.arange(float(image.shape[0])), torch.arange(float(image.shape[1])), indexing="ij")
    return torch.stack([(x * image).sum(), (y * image).sum()]) / image.sum()


def test_dataloader_workers_give_the_same_batches(index):
    dataset = FlareDataset(index, "train", mode="diff", image_size=8, augment=AUG, seed=3)

    def batches(workers):
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers)
        return [(b["image"], b["label"], b["index"]) for b in loader]

    for serial, parallel in zip(batches(0), batches(2), strict=True):
        for a, b in zip(serial, parallel, strict=True):
            assert torch.equal(a, b)


def test_set_epoch_reaches_persistent_workers(index):
    dataset = FlareDataset(index, "val", mode="frame", image_size=8, augment=AUG)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, persistent_workers=True)
    first = next(iter(loader))["image"]
    dataset.set_epoch(1)
    second = next(iter(loader))["image"]
    assert not torch.equal(first, second)
    assert torch.equal(second, torch.stack([dataset[i]["image"] for i in range(3)]))


LABELS = np.array([1] * 50 + [0] * 950)
KEYS = [f"ar_{i}.key.{i}" for i in range(len(LABELS))]


def test_sampler_none_yields_every_index_once_shuffled():
    sampler = BalancedSampler(LABELS)
    order = list(sampler)
    assert sorted(order) == list(range(len(LABELS))) and order != sorted(order)
    assert list(BalancedSampler(LABELS, shuffle=False)) == list(range(len(LABELS)))


def test_sampler_prob_keeps_positives_and_a_fraction_of_negatives_per_epoch():
    sampler = BalancedSampler(LABELS, mode="prob", keep_negative_prob=0.2, seed=1)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        chosen = np.array(list(sampler))
        assert len(chosen) == len(sampler)
        assert set(np.flatnonzero(LABELS == 1)) <= set(chosen.tolist())
        assert 0.15 < (LABELS[chosen] == 0).sum() / 950 < 0.25
        epochs.append(set(chosen.tolist()))
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert set(sampler) == epochs[0]  # reproducible for (seed, epoch)


def test_sampler_fixed_keeps_the_same_negatives_every_epoch_and_run():
    def chosen(epoch, seed):
        sampler = BalancedSampler(LABELS, mode="fixed", keep_negative_prob=0.3, keys=KEYS, seed=seed)
        sampler.set_epoch(epoch)
        return set(sampler)

    assert chosen(0, 0) == chosen(5, 0) == chosen(0, 9)
    assert 0.25 < (LABELS[list(chosen(0, 0))] == 0).sum() / 950 < 0.35
    with pytest.raises(ValueError, match="keys="):
        BalancedSampler(LABELS, mode="fixed", keep_negative_prob=0.3)


def test_sampler_weights_balances_classes_by_default():
    sampler = BalancedSampler(LABELS, mode="weights", seed=2)
    draws = np.array(list(sampler))
    assert len(draws) == len(LABELS)
    assert 0.43 < LABELS[draws].mean() < 0.57
    thinned = BalancedSampler(LABELS, mode="weights", keep_negative_prob=0.5)
    assert len(thinned) == 50 + 475
    custom = BalancedSampler(LABELS, mode="weights", weights=(LABELS == 0).astype(float))
    assert LABELS[list(custom)].sum() == 0


def test_sampler_replicas_get_disjoint_equal_slices():
    labels = LABELS[:999]  # not divisible by 4: the last rank's slice wraps around
    parts = [list(BalancedSampler(labels, num_replicas=4, rank=r, seed=5)) for r in range(4)]
    assert {len(p) for p in parts} == {250}
    together = [i for p in parts for i in p]
    assert set(together) == set(range(999)) and len(together) == 1000
    assert len(set(parts[0]) & set(parts[1])) == 0


def test_diff_after_a_gap_is_no_change_not_change_since_the_first_frame():
    from arflare.data.datasets import resolve_history

    times = pd.to_datetime(["2010-05-05 00:00", "2010-05-05 00:12", "2010-05-05 01:00"])
    table = pd.DataFrame({"ar": ["1069"] * 3, "timestamp": times})
    rows, complete = resolve_history(table, (0, -12), fill="self")
    assert rows[2].tolist() == [2, 2] and not complete[2]  # 00:48 is missing: I_t - I_t = 0
    assert resolve_history(table, (0, -12))[0][2].tolist() == [2, 0]  # sequences pad with the AR's first frame
    assert rows[1].tolist() == [1, 0] and complete[1]


def test_device_keys_derive_from_the_input_mode_table():
    from dataclasses import replace

    from arflare.data.modes import INPUT_MODES, model_input_keys, register_input_mode

    assert {"image", "flow"} <= model_input_keys() and "label" not in model_input_keys()
    register_input_mode(replace(INPUT_MODES["frame"], name="probe_keys", keys=("image", "extra")))
    try:
        assert "extra" in model_input_keys()
    finally:
        INPUT_MODES.unregister("probe_keys")
