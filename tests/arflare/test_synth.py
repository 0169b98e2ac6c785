"""The synthetic AR-flares generator writes the real format, with labels that follow the 24 h rule."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from arflare.data import synth
from arflare.data.shards import SPLITS, iter_members, read_member

TINY = {"ars": 6, "size": 24, "hours": 4.0, "activity": 10.0, "samples_per_shard": 40, "progress": False}
KEY_RE = re.compile(r"^\d+_hmi\.M_720s\.\d{8}_\d{6}_TAI\.1\.magnetogram_24$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth.generate(out, seed=0, **TINY)
    return out


def _samples(root: Path, kind: str) -> dict[str, dict[str, bytes]]:
    """All samples of every split in ``root/kind``: key -> {extension: bytes}."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((root / kind).glob("*/*.tar")):
        for member in iter_members(shard):
            samples.setdefault(member.key, {})[member.ext] = read_member(shard, member.offset, member.size)
    return samples


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*/*.tar"))}


def test_layout_keys_and_parallel_flow_shards(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    for split in SPLITS:
        mags = sorted(p.name for p in (tiny / "magnetograms" / split).glob("shard-*.tar"))
        assert mags and mags == sorted(p.name for p in (tiny / "flow" / split).glob("shard-*.tar"))
    train_shards = list((tiny / "magnetograms" / "train").glob("*.tar"))
    assert len(train_shards) > 1  # samples_per_shard=40 splits the ~72 train frames
    mags, flows = _samples(tiny, "magnetograms"), _samples(tiny, "flow")
    assert set(mags) == set(flows) == set(truth["key"])
    assert all(KEY_RE.match(key) for key in mags)
    assert all(set(members) == {"png", "json"} for members in mags.values())
    assert all(set(members) == {"flow.npz"} for members in flows.values())


def test_png_is_8bit_and_centred_on_128(tiny):
    mags = _samples(tiny, "magnetograms")
    images = np.stack([np.asarray(Image.open(io.BytesIO(m["png"]))) for m in mags.values()])
    assert images.dtype == np.uint8 and images.shape[1:] == (24, 24)
    assert np.median(images) == 128  # most of the field of view is quiet Sun, about 0 G
    gauss = synth.png_levels_to_gauss(images)
    assert gauss.max() > 500 and gauss.min() < -500  # both polarities
    assert synth.png_levels_to_gauss(np.array([128, 255]))[0] == 0
    assert synth.png_levels_to_gauss(np.array([255]))[0] == pytest.approx(6000)


def test_json_agrees_with_ground_truth(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet").set_index("key")
    for key, members in _samples(tiny, "magnetograms").items():
        meta = json.loads(members["json"])
        assert {"label", "reg_label", "ar"} <= set(meta)
        assert re.fullmatch(r"0|[CMX]\d+\.\d", meta["reg_label"])
        assert meta["label"] == int(meta["reg_label"] != "0")
        assert key.startswith(meta["ar"] + "_") and meta["ar"].isdigit()
        assert (meta["label"], meta["reg_label"]) == (truth.at[key, "label"], truth.at[key, "reg_label"])


def test_labels_follow_the_24h_rule_of_the_flare_list(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    flares = pd.read_parquet(tiny / "flares.parquet")
    assert len(flares) > 0 and truth["label"].any()
    for row in truth.itertuples():
        mine = flares[(flares["ar"] == row.ar) & (flares["peak_time"] > row.timestamp)
                      & (flares["peak_time"] <= row.timestamp + timedelta(hours=24))]
        expected = synth.goes_class(mine["peak_flux"].max()) if len(mine) else "0"
        assert row.reg_label == expected, row.key
    for column in synth.ORACLE_COLUMNS:
        assert truth[column].between(0, 1).all()
        # Latent truth: frames that flare have a higher oracle probability on average.
        assert truth.loc[truth["label"] == 1, column].mean() > truth.loc[truth["label"] == 0, column].mean()


def test_present_oracle_is_the_present_rate_held_for_a_day(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    np.testing.assert_allclose(truth["p_label_present"], 1 - np.exp(-truth["flare_rate"]), rtol=1e-12)


def test_no_change_oracle_is_the_present_one_without_the_emergence_term(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    still = truth["flux_increase_6h"] == 0  # no emergence in the last 6 h: nothing for change to add
    np.testing.assert_allclose(truth.loc[still, "p_label_present_no_change"], truth.loc[still, "p_label_present"])
    assert (truth.loc[~still, "p_label_present_no_change"] < truth.loc[~still, "p_label_present"]).all()
    assert (~still).any()


def test_present_oracle_never_uses_anything_after_t():
    """Change an AR's future (its poles after step t, hence its rate): the present oracle up to t is unchanged."""
    from arflare.data._synth_physics import HISTORY_STEPS, STEPS_PER_DAY, _flare_rate

    region = synth.simulate(3, seed=0, hours=30.0, activity=3.0)
    n = region.n_frames
    t = n // 2
    productivity = 1.7
    future = {name: track.copy() for name, track in region.tracks.items()}
    cut = HISTORY_STEPS + t + 1  # track index of the first step after frame t
    rng = np.random.default_rng(0)
    future["flux"][cut:] *= rng.uniform(0.2, 5.0, size=future["flux"][cut:].shape)  # emergence, decay
    future["x"][cut:] += rng.normal(0, 0.05, size=future["x"][cut:].shape)  # and motion
    latents = [{k: v[HISTORY_STEPS:] for k, v in _flare_rate(tracks, productivity).items()} for tracks in (region.tracks, future)]
    before, after = (synth.oracle_probabilities(latent["rate"], n, latent["rate_no_change"]) for latent in latents)
    for name in ("p_label_present", "p_label_m_present", "p_label_present_no_change"):
        np.testing.assert_array_equal(before[name][: t + 1], after[name][: t + 1])
        assert not np.allclose(before[name][t + 1 :], after[name][t + 1 :])  # the perturbation is real
    # ... while the upper bound does look ahead: frames within 24 h before the change see it.
    for name in ("p_label_future", "p_label_m_future"):
        assert not np.allclose(before[name][max(0, t + 1 - STEPS_PER_DAY) : t + 1],
                               after[name][max(0, t + 1 - STEPS_PER_DAY) : t + 1])


def test_flow_npz_has_int8_components_and_scales(tiny):
    flows = _samples(tiny, "flow")
    moving = 0
    for members in flows.values():
        with np.load(io.BytesIO(members["flow.npz"])) as npz:
            assert set(npz.files) == {"u8", "v8", "su", "sv"}
            assert npz["u8"].dtype == npz["v8"].dtype == np.int8 and npz["u8"].shape == (24, 24)
            assert npz["su"].shape == () and float(npz["su"]) > 0
            moving += int(np.abs(npz["u8"] * float(npz["su"])).max() > 0)
    assert moving > 0


def test_splits_are_ar_exclusive_and_summary_matches(tiny):
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    assert (truth.groupby("ar")["split"].nunique() == 1).all()
    assert set(truth["split"]) == set(SPLITS)
    info = json.loads((tiny / "synth.json").read_text())
    assert info["params"]["ars"] == 6
    for row in info["summary"]:
        part = truth[truth["split"] == row["split"]]
        assert (row["frames"], row["positives"], row["ars"]) == (len(part), part["label"].sum(), part["ar"].nunique())


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    synth.generate(tmp_path / "again", seed=0, **TINY)
    synth.generate(tmp_path / "other", seed=1, **TINY)
    assert _shard_bytes(tmp_path / "again") == _shard_bytes(tiny)
    assert _shard_bytes(tmp_path / "other") != _shard_bytes(tiny)


def test_labels_do_not_depend_on_image_size(tiny, tmp_path):
    summary = synth.generate(tmp_path / "small", seed=0, **{**TINY, "size": 12})
    small = pd.read_parquet(tmp_path / "small" / "ground_truth.parquet")
    big = pd.read_parquet(tiny / "ground_truth.parquet")
    assert small["reg_label"].tolist() == big["reg_label"].tolist()
    assert small["split"].tolist() == big["split"].tolist()
    assert summary.split("test").frames == (small["split"] == "test").sum()
    assert "train" in str(summary)


def test_hard_negatives_are_bright_but_rarely_flare(tmp_path):
    synth.generate(tmp_path / "mix", ars=20, size=8, hours=6.0, samples_per_shard=1000, progress=False)
    truth = pd.read_parquet(tmp_path / "mix" / "ground_truth.parquet")
    by_kind = truth.groupby("kind")[["unsigned_flux", "flare_rate"]].median()
    assert truth["hard_negative"].any()
    assert by_kind.at["simple_large", "unsigned_flux"] > by_kind.at["quiet", "unsigned_flux"]
    assert by_kind.at["simple_large", "flare_rate"] < by_kind.at["emerging", "flare_rate"]
    assert by_kind.at["simple_large", "flare_rate"] < by_kind.at["complex", "flare_rate"]


def test_ensure_generated_generates_once(tmp_path, capsys):
    out = tmp_path / "lazy"
    assert synth.ensure_generated(out, seed=3, **{**TINY, "ars": 3, "hours": 1.0})
    assert str(out) in capsys.readouterr().err
    assert not synth.ensure_generated(out, seed=3, **{**TINY, "ars": 3, "hours": 1.0})
    assert capsys.readouterr().err == ""


def test_interrupted_generate_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real_write = synth._write_split

    def crash_after_train(root, split, samples, **kwargs):
        if split == "val":
            raise KeyboardInterrupt
        return real_write(root, split, samples, **kwargs)

    monkeypatch.setattr(synth, "_write_split", crash_after_train)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "data", **{**TINY, "ars": 3, "hours": 1.0})
    assert list(tmp_path.iterdir()) == []  # no data folder, no temp leftovers
    monkeypatch.setattr(synth, "_write_split", real_write)
    assert synth.ensure_generated(tmp_path / "data", **{**TINY, "ars": 3, "hours": 1.0})
    assert (tmp_path / "data" / "synth.json").exists()


def test_refuses_to_write_into_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        synth.generate(tmp_path, **{**TINY, "ars": 3, "hours": 1.0})
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("flux", "name"), [(3.4e-6, "C3.4"), (1.2e-5, "M1.2"), (2e-4, "X2.0"), (9.99e-6, "C9.9"),
                                            (1e-6, "C1.0"), (0.0, "0")])
def test_goes_class(flux, name):
    assert synth.goes_class(flux) == name


def test_cli_main_writes_a_data_set_without_importing_torch(tmp_path):
    code = ("import sys; from arflare.data import synth; "
            f"rc = synth.main(['--out', {str(tmp_path / 'cli')!r}, '--ars', '3', '--size', '16', '--hours', '1', "
            "'--quiet']); assert 'torch' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and (tmp_path / "cli" / "synth.json").exists()
    assert synth.main(["--out", str(tmp_path / "cli"), "--ars", "3", "--quiet"]) == 2  # not empty: refused


def test_decaying_share_runs_emergence_backwards_and_zero_is_the_default():
    index = next(i for i in range(40) if synth.simulate(i, seed=0, hours=20.0).kind == "emerging")
    default = synth.simulate(index, seed=0, hours=20.0)
    zero, backwards = (synth.simulate(index, seed=0, hours=20.0, decaying_share=share) for share in (0.0, 1.0))
    np.testing.assert_array_equal(default.labels["largest"], zero.labels["largest"])
    assert (backwards.kind, backwards.n_frames) == (default.kind, default.n_frames)  # the same AR otherwise
    growth = np.diff(np.abs(default.tracks["flux"][2:]), axis=0)
    assert growth.max() > 0  # an emerging AR gains flux ...
    assert np.diff(np.abs(backwards.tracks["flux"][2:]), axis=0).max() <= 1e-9  # ... run backwards, it only loses it
    assert backwards.latent["flux_increase_6h"].max() == 0  # so the emergence term of its rate is off


def test_realism_table_measures_the_set(tiny):
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / "synth_realism.py"
    spec = importlib.util.spec_from_file_location("synth_realism", path)
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    rows = {name: synthetic for name, synthetic, _ in realism.realism_rows(tiny)}
    truth = pd.read_parquet(tiny / "ground_truth.parquet")
    assert rows["cadence"].startswith("12 min")
    assert rows["positive (>= C in 24 h)"] == f"{truth['label'].mean():.1%}"
    assert rows["ARs per split (train/val/test)"] == "/".join(str(truth[truth["split"] == s]["ar"].nunique()) for s in SPLITS)
    shares = [float(v.split()[-1].rstrip("%")) for v in rows["PNG pixels by abs(B)"].split(", ")]
    assert sum(shares) == pytest.approx(100, abs=0.05)
