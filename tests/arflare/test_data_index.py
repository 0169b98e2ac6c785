"""build_index: what it reads from the shards, what it rejects, and its cache."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import warnings
from pathlib import Path

import pandas as pd
import pytest

import arflare.data.index as index_module
from arflare.data.index import DataError, build_index
from arflare.data.index_report import MEMBERS_SHOWN
from arflare.data.shards import ShardWriter

from .conftest import frame_pixels, png_bytes


def _index(tiny, **kwargs):
    return build_index(tiny.root, flow_root=tiny.flow_root, progress=False, **kwargs)


def _quiet_index(tiny, **kwargs):
    """Index with every Python warning turned into an error: bad samples are reported, never warned."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _index(tiny, **kwargs)


@pytest.fixture
def data_copy(tiny_shards, tmp_path):
    """A private copy of the tiny shards that a test may damage."""
    shutil.copytree(tiny_shards.root, tmp_path / "magnetograms")
    shutil.copytree(tiny_shards.flow_root, tmp_path / "flow")
    return tiny_shards.__class__(tmp_path / "magnetograms", tmp_path / "flow", tiny_shards.samples)


def test_index_reads_keys_ars_times_and_labels(tiny_shards):
    table = _index(tiny_shards).table
    expected = tiny_shards.samples.sort_values(["split", "key"]).reset_index(drop=True)
    got = table.sort_values(["split", "key"]).reset_index(drop=True)
    assert got["key"].tolist() == expected["key"].tolist()  # dotted keys kept whole
    assert got["key"].str.contains(r"\.magnetogram_224$").all()
    assert got["ar"].tolist() == expected["ar"].tolist()
    assert (got["timestamp"] == pd.to_datetime(expected["timestamp"])).all()
    assert got["label"].tolist() == expected["label"].tolist()
    assert got["reg_label"].tolist() == expected["reg_label"].tolist()
    assert got["shard"].tolist() == expected["shard"].tolist()
    assert json.loads(got["meta"][0]) == {"ar": got["ar"][0], "instrument": "HMI", "lat_deg": 12.5}


def test_index_is_sorted_by_split_ar_time(tiny_shards):
    table = _index(tiny_shards).table
    assert list(dict.fromkeys(table["split"])) == ["train", "val", "test"]
    for _, part in table.groupby(["split", "ar"]):
        assert part["timestamp"].is_monotonic_increasing
        assert part.index.to_series().diff().fillna(1).eq(1).all()  # each AR contiguous


def test_index_matches_flow_by_key_across_shard_names(tiny_shards):
    table = _index(tiny_shards).table.merge(tiny_shards.samples[["key", "has_flow"]], on="key")
    assert (table["has_flow_x"] == table["has_flow_y"]).all()
    assert table.loc[table["split"] == "train", "flow_shard"].eq("train/flow-000000.tar").all()
    assert (table.loc[~table["has_flow_x"], "flow_size"] == -1).all()


def test_index_without_flow_root_has_no_flow(tiny_shards):
    index = build_index(tiny_shards.root, progress=False)
    assert not index.table["has_flow"].any()
    assert index.flow_root is None


def test_summary_counts_per_split(tiny_shards):
    summary = _index(tiny_shards).summary().set_index("split")
    samples = tiny_shards.samples
    for split in ("train", "val", "test"):
        part = samples[samples["split"] == split]
        assert summary.loc[split, "samples"] == len(part)
        assert summary.loc[split, "positives"] == part["label"].sum()
        assert summary.loc[split, "ars"] == part["ar"].nunique()
        assert summary.loc[split, "first"] == part["timestamp"].min()
    assert summary["skipped"].sum() == 0


def test_fingerprint_same_for_copied_data_and_changes_with_labels(tiny_shards, data_copy):
    assert _index(tiny_shards).fingerprint == _index(data_copy).fingerprint
    _rewrite_sample(data_copy.root / "test/shard-000000.tar", lambda key, m: {**m, "label": 1 - m["label"]})
    assert _index(data_copy).fingerprint != _index(tiny_shards).fingerprint


def test_cache_is_reused_when_shards_are_unchanged(data_copy, tmp_path, monkeypatch):
    first = _index(data_copy, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").glob("*.parquet"))
    monkeypatch.setattr(index_module, "iter_members", _forbidden)
    again = _index(data_copy, cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(again.table, first.table)
    assert again.fingerprint == first.fingerprint


def test_cache_is_rebuilt_when_a_shard_changes(data_copy, tmp_path):
    _index(data_copy, cache_dir=tmp_path / "c")
    shard = data_copy.root / "val/shard-000000.tar"
    _rewrite_sample(shard, lambda key, m: {**m, "reg_label": "X9.9"})
    rebuilt = _index(data_copy, cache_dir=tmp_path / "c")
    assert (rebuilt.table.loc[rebuilt.table["split"] == "val", "reg_label"] == "X9.9").all()


def test_cache_is_rebuilt_when_a_shard_is_added(data_copy, tmp_path):
    before = len(_index(data_copy, cache_dir=tmp_path / "c").table)
    with ShardWriter(data_copy.root / "test/shard-000001.tar") as sink:
        sink.write("1200_hmi.M_720s.20120307_010000_TAI.1.magnetogram_224", _members(label=0))
    assert len(_index(data_copy, cache_dir=tmp_path / "c").table) == before + 1


def test_cache_goes_to_arflare_cache_not_the_data_root(data_copy):
    _index(data_copy)
    assert list(data_copy.root.rglob("*.parquet")) + list(data_copy.flow_root.rglob("*.parquet")) == []
    assert len(list(Path(os.environ["ARFLARE_CACHE"]).glob("index-*.parquet"))) == 1


@pytest.mark.parametrize("folder_state", ["missing", "empty"])
def test_missing_or_empty_split_folder_is_an_error(data_copy, folder_state):
    shutil.rmtree(data_copy.root / "val")
    if folder_state == "empty":
        (data_copy.root / "val").mkdir()
    with pytest.raises(DataError, match=r"val"):
        _index(data_copy)


KEY = "1200_hmi.M_720s.20120307_020000_TAI.1.magnetogram_224"


def _members(*, label=0, **override) -> dict[str, bytes]:
    members = {"png": png_bytes(frame_pixels(1)), "json": json.dumps({"label": label}).encode()}
    return {**members, **override}


BAD_SAMPLES = {
    "no_json": ({"png": png_bytes(frame_pixels(1))}, f"{KEY}.png", "no .json"),
    "no_label": (_members(json=b'{"reg_label": "0"}'), f"{KEY}.json", "label"),
    "bad_json": (_members(json=b'{"label": 1'), f"{KEY}.json", "invalid json"),
    "empty_png": (_members(png=b""), f"{KEY}.png", "empty .png"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_skipped_and_recorded_or_raises_when_strict(data_copy, case):
    members, member_name, reason = BAD_SAMPLES[case]
    with ShardWriter(data_copy.root / "test/shard-000001.tar") as sink:
        sink.write(KEY, members)
    index = _quiet_index(data_copy)
    assert KEY not in set(index.table["key"])
    assert [(s.split, s.shard, s.member) for s in index.skipped] == [("test", "test/shard-000001.tar", member_name)]
    assert reason in index.skipped[0].reason
    assert index.summary().set_index("split").loc["test", "skipped"] == 1
    with pytest.raises(DataError, match=rf"test/shard-000001\.tar.*{member_name.replace('.', '[.]')}"):
        _index(data_copy, strict=True, cache_dir=data_copy.root.parent / "other-cache")


def test_strict_raises_even_when_the_index_comes_from_cache(data_copy):
    (data_copy.root / "test/shard-000001.tar").write_bytes(b"not a tar at all" * 64)
    _quiet_index(data_copy)
    with pytest.raises(DataError, match="shard-000001"):
        _index(data_copy, strict=True)


def test_file_that_is_not_a_tar_is_skipped_whole(data_copy):
    (data_copy.root / "test/shard-000001.tar").write_bytes(b"not a tar at all" * 64)
    index = _quiet_index(data_copy)
    assert [(s.shard, s.member) for s in index.skipped] == [("test/shard-000001.tar", "*")]
    assert "not a readable tar" in index.skipped[0].reason


def test_truncated_tar_keeps_the_complete_samples(data_copy):
    shard = data_copy.root / "train/shard-000001.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[3].offset_data + 5  # inside the second sample's json
    shard.write_bytes(shard.read_bytes()[:cut])
    index = _quiet_index(data_copy)
    kept = index.table[index.table["shard"] == "train/shard-000001.tar"]
    assert kept["key"].tolist() == [members[0].name.removesuffix(".png")]
    reasons = " ".join(s.reason for s in index.skipped)
    assert "truncated" in reasons and members[3].name in reasons
    assert {s.member for s in index.skipped} >= {members[2].name}  # the half-written sample


def test_sample_written_twice_is_kept_once(data_copy):
    key = data_copy.samples.query("split == 'test'")["key"].iloc[0]
    with ShardWriter(data_copy.root / "test/shard-000001.tar") as sink:
        sink.write(key, _members(label=1))
    index = _quiet_index(data_copy)
    assert (index.table["key"] == key).sum() == 1
    assert index.skipped[0].member == f"{key}.png" and "test/shard-000000.tar" in index.skipped[0].reason


def test_split_with_only_bad_samples_is_an_error(data_copy):
    (data_copy.root / "val/shard-000000.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match=r"'val'.*no usable sample"):
        _index(data_copy)


def test_active_region_in_two_splits_is_an_error(data_copy):
    with ShardWriter(data_copy.root / "test/shard-000001.tar") as sink:
        sink.write("1069_hmi.M_720s.20100506_000000_TAI.1.magnetogram_224", _members())
    with pytest.raises(DataError, match=r"AR '1069'.*train.*test"):
        _index(data_copy)


def _forbidden(*args, **kwargs):
    raise AssertionError("the cache should have been used; a tar was opened")


def _rewrite_sample(shard, edit) -> None:
    """Rewrite every json member of ``shard`` through ``edit(key, meta) -> meta``."""
    with tarfile.open(shard) as tar:
        contents = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    samples: dict[str, dict[str, bytes]] = {}
    for name, data in contents:
        key, ext = name.rsplit(".", 1)
        if ext == "json":
            data = json.dumps(edit(key, json.loads(data))).encode()
        samples.setdefault(key, {})[ext] = data
    shard.unlink()
    with ShardWriter(shard) as sink:
        for key, members in samples.items():
            sink.write(key, members)


def _damage(data_copy) -> list[str]:
    """Four bad samples in two shards with two reasons, a damaged flow shard; returns the bad member names."""
    keys = [f"1201_hmi.M_720s.20120307_0{h}0000_TAI.1.magnetogram_224" for h in range(4)]
    with ShardWriter(data_copy.root / "test/shard-000001.tar") as sink:
        for key in keys[:3]:
            sink.write(key, {"png": png_bytes(frame_pixels(1))})  # no json
    with ShardWriter(data_copy.root / "val/shard-000001.tar") as sink:
        sink.write(keys[3], _members(png=b""))
    (data_copy.flow_root / "train/flow-000000.tar").write_bytes(b"not a tar" * 64)
    return [f"{key}.png" for key in keys]


def test_index_report_lists_every_skipped_sample_by_shard_and_reason(data_copy, tiny_shards):
    from arflare.data.index_report import format_report, skipped_groups

    bad = _damage(data_copy)
    index = _quiet_index(data_copy)
    good = _index(tiny_shards).summary().set_index("split")
    summary = index.summary().set_index("split")
    assert summary["samples"].tolist() == good["samples"].tolist()  # the counts of usable samples do not move
    assert summary["skipped"].tolist() == [0, 1, 3]  # train, val, test: samples, not the flow shard
    groups = skipped_groups(index.skipped)
    assert [(g.source, g.shard, g.count) for g in groups.itertuples()] == [
        ("magnetogram", "val/shard-000001.tar", 1), ("magnetogram", "test/shard-000001.tar", 3),
        ("flow", "train/flow-000000.tar", 1)]
    table = format_report(index, fmt="table")
    assert "Left out 4 bad sample(s) or shard(s) and 1 flow problem(s) in 3 shard(s)" in table
    assert "sample has no .json member" in table and "empty .png member" in table and "(flow)" in table
    assert bad[0] in table and "(+0 more)" not in table
    report = json.loads(format_report(index, fmt="json"))
    assert sorted(s["member"] for s in report["skipped"] if s["source"] == "magnetogram") == sorted(bad)


def test_leakage_is_an_error_after_every_other_problem_is_listed(data_copy, tmp_path, monkeypatch, capsys):
    from arflare.cli import main

    bad = _damage(data_copy)
    with ShardWriter(data_copy.root / "test/shard-000002.tar") as sink:
        sink.write("1069_hmi.M_720s.20100506_000000_TAI.1.magnetogram_224", _members())
        sink.write("1100_hmi.M_720s.20110214_000000_TAI.1.magnetogram_224", _members())
    monkeypatch.setenv("ARFLARE_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["index", str(data_copy.root), "--flow-root", str(data_copy.flow_root)])
    err = capsys.readouterr().err
    assert code == 2
    assert all(member in err for member in bad[:MEMBERS_SHOWN]) and bad[3] in err and "flow-000000.tar" in err
    assert "2 AR(s) appear in more than one split" in err and "AR '1069'" in err and "AR '1100'" in err
    assert err.index("Left out 4 bad sample(s)") < err.index("appear in more than one split")
    assert "Warning" not in err and "warnings.warn" not in err


def test_active_region_copied_into_another_split_is_leakage_naming_ar_and_both_shards(data_copy):
    # The same keys in another split used to be skipped one by one as duplicates, silently
    # leaving the AR where it was first seen; a copy across splits is leakage.
    copied = data_copy.samples.query("ar == '1100'")
    with ShardWriter(data_copy.root / "train/shard-000002.tar") as sink:
        for key in copied["key"]:
            sink.write(key, _members())
    with pytest.raises(DataError, match=r"AR '1100' in train \(train/shard-000002.tar\), val \(val/shard-000000.tar\)"):
        _index(data_copy)
