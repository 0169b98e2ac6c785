"""The cached physics feature table of a shard set and its history changes."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from arflare.data.index import build_index
from arflare.physics import table as physics_table
from arflare.physics.fields import FEATURE_NAMES, FLUX_THRESHOLD_G
from arflare.physics.table import FEATURE_COLUMNS, add_changes, chunk_features, feature_table
from tests.arflare.conftest import TINY_SIZE

GAUSS_PER_LEVEL = 6000 / 127


def test_table_has_every_sample_in_index_order_and_known_flux(tiny_shards, tmp_path):
    index = build_index(tiny_shards.root, progress=False)
    table = feature_table(index, cache_dir=tmp_path, progress=False)
    assert table["key"].tolist() == index.table["key"].tolist()
    assert list(table.columns[-len(FEATURE_COLUMNS) :]) == list(FEATURE_COLUMNS)
    # Every tiny frame is level 128 + frame_id with a 4x4 marker at level 0 (-6047 G).
    ids = tiny_shards.samples.set_index("key").loc[table["key"], "frame_id"].to_numpy()
    marker = 16 * 128 * GAUSS_PER_LEVEL
    rest = (TINY_SIZE**2 - 16) * ids * GAUSS_PER_LEVEL * (ids * GAUSS_PER_LEVEL > FLUX_THRESHOLD_G)
    np.testing.assert_allclose(table["unsigned_flux"], (marker + rest) / TINY_SIZE**2, rtol=1e-5)


def test_cache_is_reused_and_keyed_by_data(tiny_shards, tmp_path, monkeypatch):
    index = build_index(tiny_shards.root, progress=False)
    first = feature_table(index, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob(f"features-{index.fingerprint}-*.parquet"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite a warm cache")

    monkeypatch.setattr(physics_table, "_compute", fail)
    pd.testing.assert_frame_equal(feature_table(index, cache_dir=tmp_path, progress=False), first)


def test_worker_processes_give_the_same_table(tiny_shards, tmp_path):
    index = build_index(tiny_shards.root, progress=False)
    one = feature_table(index, cache_dir=tmp_path / "a", progress=False)
    two = feature_table(index, cache_dir=tmp_path / "b", workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_undecodable_png_gives_nan_row(tmp_path, tiny_shards):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a png at all")
    good = tiny_shards.samples.iloc[0]
    index = build_index(tiny_shards.root, progress=False)
    row = index.table[index.table["key"] == good["key"]].iloc[0]
    values, failed = chunk_features([(str(bad), 0, 16), (str(index.root / row["shard"]), row["png_offset"],
                                                         row["png_size"])])  # fmt: skip
    assert failed == [0]
    assert np.isnan(values["unsigned_flux"][0]) and values["unsigned_flux"][1] > 0


def test_changes_use_the_same_ar_and_the_datasets_history_rule():
    # AR 1 at these minutes; the value of every feature is the minute, so a change is a time gap.
    t0 = datetime(2011, 1, 1)
    minutes = [0, 12, 24, 36, 48, 72, 360, 420]
    rows = [{"ar": "1", "key": f"1-{m}", "timestamp": t0 + timedelta(minutes=m), "value": m} for m in minutes]
    rows.append({"ar": "2", "key": "2-60", "timestamp": t0 + timedelta(minutes=60), "value": 1e6})
    frame = pd.DataFrame(rows)
    for name in FEATURE_NAMES:
        frame[name] = frame["value"].astype(float)
    out = add_changes(frame).set_index("key")
    assert out.loc["1-72", "area_d1h"] == 72 - 12  # the frame exactly 1 h earlier
    assert out.loc["1-420", "area_d1h"] == 420 - 360
    assert out.loc["1-420", "area_d6h"] == 420 - 48  # none at 60: the nearest earlier within 12 min
    assert out.loc["1-360", "area_d6h"] == 360 - 0
    assert np.isnan(out.loc["1-48", "area_d1h"])  # no history that far back
    assert np.isnan(out.loc["1-360", "area_d1h"])  # nothing in [288, 300] min
    assert np.isnan(out.loc["2-60", "area_d1h"])  # AR 1's frame at 0 is not AR 2's history
    assert out["area_d6h"].notna().sum() == 2
    assert out.index.tolist() == frame["key"].tolist()  # row order kept


def test_feature_table_without_cache_dir_uses_arflare_cache(tiny_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("ARFLARE_CACHE", str(tmp_path / "env-cache"))
    feature_table(build_index(tiny_shards.root, progress=False), progress=False)
    assert list((tmp_path / "env-cache").glob("features-*.parquet"))
