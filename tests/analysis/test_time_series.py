"""Time series: frame selection, drift registration, the lattice fit, tracking,
the per-frame cache, the stack reader, and (slow) a 20-frame rotating, drifting particle end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from octascope.analysis.series import (SeriesOptions, analyse_series, fit_particle_lattice, register_frames,
                                       track_particles)
from octascope.core.errors import ConfigError, InputError
from octascope.core.model import Image, Result
from octascope.input.readers import parse_frames, read_stack
from octascope.input.synthetic import SyntheticSpec, render_columns
from octascope.input.synthetic_series import make_synthetic_series


@pytest.mark.parametrize("value, expected", [
    ("all", list(range(10))), ([0, 3], [0, 1, 2, 3]), ([-2, -1], [8, 9]), ("2:8:3", [2, 5]), (":3", [0, 1, 2]),
])
def test_frame_selections(value, expected):
    assert parse_frames(value, 10) == expected


@pytest.mark.parametrize("value, match", [
    ([0, 10], "outside the stack's frames 0..9"), ([5, 2], "first > last"), ("0:0", "selects no frame"),
    ("a:b", "not a slice"), ("every", "not a frame selection"), (3, "not a frame selection"), ("1:5:0", "step of 0"),
])
def test_bad_frame_selections_name_the_forms(value, match):
    with pytest.raises(InputError, match=match) as info:
        parse_frames(value, 10)
    assert "source.frames=all" in str(info.value)


def _blobs(shift_xy, size=200, seed=0):
    """A few Gaussian blobs on a lattice plus noise, shifted by (x, y) px: a particle-like frame."""
    rng = np.random.default_rng(seed)
    g = np.arange(60.0, 140.0, 8.0)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    img = render_columns(x + shift_xy[0], y + shift_xy[1], np.ones(x.size), (size, size), 2.0)
    return img + rng.normal(0, 0.05, img.shape)


def test_registration_recovers_known_shifts_to_a_tenth_of_a_pixel():
    # the shifts are larger than half the blob lattice (8 px): a lattice-periodic peak would alias them
    shifts = np.array([[0.0, 0.0], [3.3, -1.7], [7.6, 2.2], [12.4, 5.9]])
    frames = [_blobs(s, seed=k) for k, s in enumerate(shifts)]
    drift = register_frames(frames, pixel_size_A=0.5, lowpass_A=2.0, upsample=20)
    np.testing.assert_allclose(drift, shifts, atol=0.1)


def _lattice_octahedra(angle_deg, a=6.25, n=6, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    i, j = (g.ravel().astype(float) for g in np.meshgrid(np.arange(n), np.arange(n)))
    t = np.radians(angle_deg)
    a1, a2 = a * np.array([np.cos(t), np.sin(t)]), a * np.array([-np.sin(t), np.cos(t)])
    xy = 30 + i[:, None] * a1 + j[:, None] * a2 + rng.normal(0, noise, (i.size, 2))
    return pd.DataFrame({"x_A": xy[:, 0], "y_A": xy[:, 1], "i": i, "j": j})


def test_lattice_fit_gives_rotation_and_spacing_with_errors_that_match_the_scatter():
    exact = fit_particle_lattice(_lattice_octahedra(12.0))
    assert exact["rotation_deg"] == pytest.approx(12.0, abs=1e-9) and exact["a1_A"] == pytest.approx(6.25)
    # 0.05 Å position noise: the stated 1σ of the rotation must describe its scatter over seeds
    fits = [fit_particle_lattice(_lattice_octahedra(12.0, noise=0.05, seed=s)) for s in range(200)]
    rot = np.array([f["rotation_deg"] for f in fits])
    err = np.median([f["rotation_err_deg"] for f in fits])
    assert abs(rot.mean() - 12.0) < 3 * rot.std() / np.sqrt(len(rot))
    assert 0.8 < rot.std() / err < 1.25
    # a lattice near the ±45° fold and one with a2 given first: the rotation modulo 90°
    assert fit_particle_lattice(_lattice_octahedra(44.9))["rotation_deg"] == pytest.approx(44.9, abs=1e-6)
    swapped = _lattice_octahedra(-20.0).rename(columns={"i": "j", "j": "i"})
    assert fit_particle_lattice(swapped)["rotation_deg"] == pytest.approx(-20.0, abs=1e-6)
    assert np.isnan(fit_particle_lattice(_lattice_octahedra(0.0, n=1))["rotation_deg"])


def test_tracking_keeps_ids_through_reordering_gaps_and_arrivals():
    rows = [
        (0, 10, 10, 5.0), (0, 80, 80, 20.0),
        (1, 82, 81, 20.5), (1, 11, 10, 5.1),                      # listed in the other order
        (2, 12, 11, 5.2),                                        # particle 2 missing for one frame
        (3, 13, 11, 5.3), (3, 84, 82, 21.0), (3, 50, 20, 30.0),  # 2 back; a new particle appears
        (4, 14, 12, 5.4), (4, 51, 20, 12.0),                     # same place, rotation jumped by 18°: a new one
    ]
    det = pd.DataFrame(rows, columns=["frame", "x_A", "y_A", "rotation_deg"])
    ids = track_particles(det, SeriesOptions(max_move_A=10.0, max_rotation_deg=10.0, max_gap_frames=1))
    assert list(ids) == [1, 2, 2, 1, 1, 1, 2, 3, 1, 4]
    closed = track_particles(det, SeriesOptions(max_move_A=10.0, max_gap_frames=0))
    assert closed[6] not in (1, 2)  # a gap longer than allowed ends the track


class _Counting:
    """A stand-in analysis: one particle whose Pb lattice rotates as the frame index says."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: Image) -> Result:
        self.calls += 1
        k = int(image.metadata["k"])
        octs = _lattice_octahedra(10.0 + 0.1 * k).assign(particle=1, theta3_deg=8.0 + 0.01 * np.arange(36))
        parts = pd.DataFrame({"particle": [1], "verdict": ["analysed"], "centroid_x_A": [45.0], "centroid_y_A": [45.0],
                              "rotation_deg": [10.0], "n_octahedra_measured": [36]})
        cols = pd.DataFrame({"x_A": octs.x_A, "y_A": octs.y_A, "species": "Pb", "particle": 1})
        return Result(image=image, columns=cols, tables={"octahedra": octs, "particles": parts})


def test_series_is_cached_per_frame_and_resumes(tmp_path):
    frames = [Image(data=_blobs((0.5 * k, 0.0), seed=k).astype(np.float32), pixel_size_A=0.5, metadata={"k": k})
              for k in range(5)]
    first = _Counting()
    res = analyse_series(frames[:3], analyse=first, cache_dir=tmp_path, cache_config={"a": 1})
    assert first.calls == 3 and res.n_cached == 0
    again = _Counting()  # "interrupted" after 3 frames: the re-run computes only the 2 new ones
    res = analyse_series(frames, analyse=again, cache_dir=tmp_path, cache_config={"a": 1}, time_s=np.arange(5) * 2.0,
                         dose_per_frame_e_per_A2=50.0)
    assert again.calls == 2 and res.n_cached == 3
    other = _Counting()  # another configuration is another key
    analyse_series(frames[:2], analyse=other, cache_dir=tmp_path, cache_config={"a": 2})
    assert other.calls == 2
    s = res.series
    assert list(s["frame"]) == [0, 1, 2, 3, 4] and set(s["particle"]) == {1}
    np.testing.assert_allclose(s["rotation_deg"], 10.0 + 0.1 * np.arange(5), atol=1e-9)
    np.testing.assert_allclose(s["time_s"], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(s["dose_e_per_A2"], [50, 100, 150, 200, 250])
    np.testing.assert_allclose(res.drift_px[:, 0], 0.5 * np.arange(5), atol=0.1)
    assert res.rotation_change_deg(1)[0] == pytest.approx(0.4, abs=1e-9)
    assert {"frame", "particle", "frame_particle"} <= set(res.octahedra) and len(res.octahedra) == 5 * 36
    assert sorted(res.columns["frame"].unique()) == [0, 1, 2, 3, 4]


def test_series_keeps_going_past_a_refused_frame(tmp_path):
    frames = [Image(data=_blobs((0, 0), seed=k).astype(np.float32), pixel_size_A=0.5, metadata={"k": k}) for k in range(3)]
    ok = _Counting()

    def analyse(image):
        if image.metadata["k"] == 1:
            raise InputError("no crystal in this frame")
        return ok(image)

    res = analyse_series(frames, analyse=analyse)
    assert res.failed == {1: "no crystal in this frame"} and list(res.series["frame"]) == [0, 2]


def test_stack_reader_selects_frames_and_refuses_what_it_cannot(tmp_path):
    stack = np.stack([_blobs((k, 0), seed=k).astype(np.float32) for k in range(4)])
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    st = read_stack(path, frames=[1, 2], pixel_size_A=0.5)
    assert len(st) == 2 and st.frames == [1, 2] and st.n_stack == 4 and st.frame_time_s is None
    np.testing.assert_array_equal(st[1].data, stack[2])
    inv = read_stack(path, frames="all", pixel_size_A=0.5, invert=True)
    np.testing.assert_allclose(inv[0].data, stack[0].max() + stack[0].min() - stack[0], rtol=1e-6)
    np.save(tmp_path / "one.npy", stack[0])
    with pytest.raises(InputError, match="not a stack of frames"):
        read_stack(tmp_path / "one.npy", frames="all", pixel_size_A=0.5)
    with pytest.raises(InputError, match="carries no pixel-size calibration"):
        read_stack(path, frames="all")


def test_stack_time_axis_from_a_hyperspy_file(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal2D(np.stack([_blobs((k, 0), seed=k).astype(np.float32) for k in range(3)]))
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.units = 0.05, "nm"
    nav = s.axes_manager.navigation_axes[0]
    nav.scale, nav.units = 250.0, "ms"
    s.save(tmp_path / "series.hspy")
    st = read_stack(tmp_path / "series.hspy", frames="all")
    assert st.frame_time_s == pytest.approx(0.25) and st.pixel_size_A == pytest.approx(0.5)


def test_source_frames_config_checks():
    from octascope.input.sources import check_source_config, load_source

    with pytest.raises(ConfigError, match="both given"):
        check_source_config({"kind": "file", "path": "x.npy", "frame": 1, "frames": "all"})
    with pytest.raises(ConfigError, match="positive number"):
        check_source_config({"kind": "file", "path": "x.npy", "frame_time_s": -1})
    with pytest.raises(InputError, match="source.invert"):
        check_source_config({"kind": "file", "path": "x.npy", "invert": "yes"})
    with pytest.raises(ConfigError, match="time-series run"):
        load_source("file", path="x.npy", frame_time_s=0.5)


@pytest.mark.slow
def test_twenty_frame_stack_recovers_a_two_degree_rotation(tmp_path):
    """20 frames, drift, a particle rotating by 2° linearly: recovered within 0.3°."""
    spec = SyntheticSpec(n_cells=(6, 6), particle_angle_deg=10.0, dose_e_per_A2=500.0, seed=4)
    frames, truth = make_synthetic_series(spec, n_frames=20, rotation_total_deg=2.0)
    res = analyse_series(frames, cache_dir=tmp_path)
    assert res.series["particle"].nunique() == 1 and len(res.series) == 20  # one track through every frame
    change, err = res.rotation_change_deg(1)
    assert abs(change - 2.0) < 0.3 and err < 0.1
    true_px = (truth.drift_A - truth.drift_A[0]) / spec.pixel_size_A
    assert np.abs(res.drift_px - true_px).max() < 1.0  # registration within a pixel (the tracking needs Å)
    assert abs(res.series["theta3_deg"].mean() - 8.0) < 0.5 and abs(res.series["a1_A"].mean() - 6.25) < 0.02


@pytest.mark.slow
def test_series_command_writes_tables_and_resumes(tmp_path, in_tmp, capsys, monkeypatch):
    from cli_run import run_cli

    monkeypatch.setenv("OCTASCOPE_CACHE", str(tmp_path / "cache"))
    frames, _ = make_synthetic_series(SyntheticSpec(n_cells=(5, 5), particle_angle_deg=10.0, dose_e_per_A2=1000.0),
                                      n_frames=3, rotation_total_deg=1.0)
    np.save(tmp_path / "stack.npy", np.stack([f.data for f in frames]))
    args = [f"source.path={tmp_path / 'stack.npy'}", "source.pixel_size_A=0.2", "source.frames=all",
            "source.frame_time_s=0.5", "tracking.enabled=false", "figure_formats=[png]"]
    code, out, err = run_cli(args + [f"hydra.run.dir={tmp_path / 'a'}"], capsys)
    assert code == 0, err
    assert "analysed time series stack.npy: frames 0..2 (3 of 3)" in out and "particle 1: in 3 frame(s)" in out
    series = pd.read_csv(tmp_path / "a" / "series.csv")
    assert list(series["time_s"]) == [0.0, 0.5, 1.0]
    for name in ("columns", "octahedra", "particles"):
        assert "frame" in pd.read_csv(tmp_path / "a" / f"{name}.csv")
    assert (tmp_path / "a" / "series_tilts.png").exists() and (tmp_path / "a" / "provenance.json").exists()
    code, out, err = run_cli(args + [f"hydra.run.dir={tmp_path / 'b'}"], capsys)
    assert code == 0 and "(3 frame(s) from the cache)" in out


def test_series_options_are_declared_once_and_mirrored_in_the_yaml():
    from pathlib import Path

    import yaml

    from octascope.core.errors import PluginParameterError

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "config.yaml").read_text())
    assert cfg["series"] == SeriesOptions().to_dict() and cfg["export"] == []
    for source in ("file", "example", "synthetic"):
        src = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "source" / f"{source}.yaml").read_text())
        assert src["frames"] is None and src["invert"] is False
    with pytest.raises(PluginParameterError, match="max_gap_frames"):
        SeriesOptions(max_gap_frames=-1)
