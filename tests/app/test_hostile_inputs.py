"""Hostile and careless inputs: configs and flags that try to run code or plant files,
environment variables, logging configs, resolvers, YAML and interpolation bombs, every image
reader with damaged, renamed, empty or huge-declared files, truth tables, run folders, tracking
store faults and signals.

Every case checks the same contract: exit code 2 (or the documented one), exactly one
``octascope: error:`` line on stderr, no traceback, no warning, nothing created or changed in the
working folder, and for execution attempts that the planted effect (a marker file) did not
happen. Fast cases run in-process in the default suite; bombs, signals and waits are ``slow`` and
run the command in a subprocess whose peak memory is measured (refused inputs: at most
:data:`PEAK_LIMIT`) under an address-space limit (:data:`AS_LIMIT`) that keeps a bomb from
taking the machine down. ``docs/reliability.md`` tabulates the classes.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest


from cli_run import run_cli  # noqa: E402
from microscope_files import write_dm, write_tiff, write_velox_emd  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["progress=false", "figure_formats=[]", "tracking.enabled=false"]
SYN = ["source=synthetic", "source.spec.n_cells=[5,5]"]
#: peak memory allowed for a refused input [bytes]
PEAK_LIMIT = 512 * 2**20
#: address-space limit of a subprocess (a bomb fails instead of filling the machine)
AS_LIMIT = 3 * 2**30
#: marker a planted command or module would create
MARK = "PWNED"
#: HOSTILE_CONTRACT_ONLY=1 checks the contract without the wording of the line (to measure older code)
CONTRACT_ONLY = os.environ.get("HOSTILE_CONTRACT_ONLY") == "1"


# ------------------------------------------------------------------------------------------------
# the contract
# ------------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its kind, size and modification time."""
    out = {}
    for p in folder.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(folder))] = ("d", 0, 0) if p.is_dir() and not p.is_symlink() else ("f", st.st_size, st.st_mtime_ns)
    return out


def assert_contract(code, out, err, before, after, needle=None, *, expect=2, also=()):
    """Exit ``expect``, one ``octascope: error:`` line (plus lines starting with ``also``), no
    traceback or warning, the folder unchanged."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("octascope: error: ")]
    others = [line for line in lines if line not in errors and not line.startswith(tuple(also))]
    assert code == expect, err[-3000:]
    assert len(errors) == 1 and not others, err[-3000:]
    assert "; " in errors[0], errors[0]
    assert "Traceback" not in err + out and "Warning" not in err, err[-3000:]
    if needle and not CONTRACT_ONLY:
        assert needle.lower() in errors[0].lower(), errors[0]
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not changed, sorted(changed)[:10]


def refused(args, folder: Path, capsys, needle=None, *, expect=2, also=()):
    """Run ``octascope ARGS`` in-process in ``folder`` and check the contract."""
    before = snapshot(folder)
    code, out, err = run_cli(args, capsys)
    assert_contract(code, out, err, before, snapshot(folder), needle, expect=expect, also=also)
    assert not list(folder.rglob(MARK + "*")), "the planted effect happened"
    return err


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for k in ("MLFLOW_TRACKING_URI", "OCTASCOPE_DEBUG", "OCTASCOPE_RUN_ID"):
        env.pop(k, None)
    env.update(extra)
    return env


_WRAP = textwrap.dedent("""
    import json, resource, subprocess, sys
    limit, report, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        p = subprocess.run(sys.argv[4:], preexec_fn=cap, timeout=timeout)
        code = p.returncode
    except subprocess.TimeoutExpired:
        code = 124
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    open(report, "w").write(json.dumps({"code": code, "peak": peak}))
    sys.exit(code)
""")


def run_proc(args, cwd: Path, *, timeout=300, env=None, module=True):
    """``python -m octascope.app.cli ARGS`` in a subprocess under :data:`AS_LIMIT`: (code, out, err,
    peak RSS in bytes, seconds)."""
    report = cwd.parent / f"{cwd.name}.rusage.json"
    cmd = [sys.executable, "-c", _WRAP, str(AS_LIMIT), str(report), str(timeout), sys.executable, "-m", "octascope.app.cli",
           *args]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout + 60)
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or "", (exc.stderr or "") + "\n(timed out)", 0, time.time() - t0
    info = json.loads(report.read_text()) if report.exists() else {"code": proc.returncode, "peak": 0}
    report.unlink(missing_ok=True)
    return proc.returncode, proc.stdout, proc.stderr, info["peak"], time.time() - t0


def refused_proc(args, folder: Path, needle=None, *, timeout=300, env=None, peak_limit=PEAK_LIMIT):
    before = snapshot(folder)
    code, out, err, peak, _ = run_proc(args, folder, timeout=timeout, env=env)
    assert_contract(code, out, err, before, snapshot(folder), needle)
    assert not list(folder.rglob(MARK + "*")), "the planted effect happened"
    assert peak <= peak_limit, f"peak memory {peak / 2**20:.0f} MiB"
    return err


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def _image(shape=(64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A grey 8-bit PNG of zeros, compressed row by row (a few hundred kB for 20000²)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))
    return path


def tiff_tile_bomb(path: Path, side: int, tile: int = 512) -> Path:
    """A tiled, zlib-compressed TIFF of side² zeros: every tile the same few hundred bytes."""
    import tifffile

    block = zlib.compress(bytes(tile * tile * 2), 9)
    n = (-(-side // tile)) ** 2
    tifffile.imwrite(path, (block for _ in range(n)), shape=(side, side), dtype=np.uint16, tile=(tile, tile),
                     compression="zlib")
    return path


def sparse_npy(path: Path, shape, dtype=np.float32) -> Path:
    """An NPY file of ``shape`` whose pixels are a hole in the file (no disk space, no memory)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del arr
    return path


def npy_header_only(path: Path, shape, dtype="<f4") -> Path:
    """An NPY header declaring ``shape`` and no data at all."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return path


def truncated(src: Path, dest: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: max(1, int(len(data) * keep))])
    return dest


def image_files(folder: Path) -> dict[str, Path]:
    """One valid file of each format (with the pixel size 0.2 Å in the calibrated ones)."""
    import imageio.v3 as iio

    folder.mkdir(exist_ok=True)
    img = _image()
    out = {"npy": folder / "ok.npy", "png": folder / "ok.png"}
    np.save(out["npy"], img)
    iio.imwrite(out["png"], (img * 65535).astype(np.uint16))
    out["tif"] = write_tiff(folder / "ok.tif", img, 0.02)
    out["dm3"] = write_dm(folder / "ok.dm3", img, 0.02, version=3)
    out["dm4"] = write_dm(folder / "ok.dm4", img, 0.02, version=4)
    out["emd"] = write_velox_emd(folder / "ok.emd", {"HAADF": img}, 0.02)
    import hyperspy.api as hs

    sig = hs.signals.Signal2D(img)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = 0.02, "nm"
    sig.save(folder / "ok.hspy")
    out["hspy"] = folder / "ok.hspy"
    return out


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    return image_files(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def particle(tmp_path_factory) -> list[str]:
    """Overrides reading a small synthetic particle that analyses cleanly (the truth cases' image)."""
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    image, _ = make_synthetic(SyntheticSpec(n_cells=(5, 5)))
    path = tmp_path_factory.mktemp("particle") / "qd.npy"
    np.save(path, image.data)
    return [f"source.path={path}", f"source.pixel_size_A={image.pixel_size_A}"]


def _src(path: Path, *extra: str) -> list[str]:
    return [f"source.path={path}", *extra, *QUIET]


# ================================================================================================
# 1. code execution or file planting from a config or a flag
# ================================================================================================


def _git_fsmonitor(marker: Path) -> list[str]:
    """Overrides that make ``git status`` run a command (``core.fsmonitor``) if they reach git."""
    return ["+hydra.job.env_set.GIT_CONFIG_COUNT=1", "+hydra.job.env_set.GIT_CONFIG_KEY_0=core.fsmonitor",
            f"+hydra.job.env_set.GIT_CONFIG_VALUE_0='touch {marker} #'"]


def _conf(tmp: Path, files: dict[str, str]) -> Path:
    """A user config folder (for --config-dir) holding ``files`` (relative path -> text)."""
    conf = tmp / "in_conf"
    for rel, text in files.items():
        (conf / rel).parent.mkdir(parents=True, exist_ok=True)
        (conf / rel).write_text(textwrap.dedent(text))
    return conf


def test_exec_git_config_env_from_overrides(in_tmp, capsys):
    args = [*SYN, "progress=false", "figure_formats=[]", *_git_fsmonitor(in_tmp / MARK)]
    refused(args, in_tmp, capsys, "GIT_CONFIG")


def test_exec_git_config_env_from_experiment_file(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/evil.yaml": f"""\
        # @package _global_
        hydra:
          job:
            env_set:
              GIT_CONFIG_COUNT: "1"
              GIT_CONFIG_KEY_0: core.fsmonitor
              GIT_CONFIG_VALUE_0: "touch {in_tmp / MARK} #"
        """})
    refused([*SYN, "progress=false", "figure_formats=[]", "-cd", str(conf), "experiment=evil"], in_tmp, capsys, "GIT_CONFIG")


def test_exec_logging_file_handler_plants_a_pth_file(in_tmp, capsys):
    args = [*SYN, *QUIET, "+hydra.job_logging.handlers.f.class=logging.FileHandler",
            f"+hydra.job_logging.handlers.f.filename={in_tmp / (MARK + '.pth')}", "hydra.job_logging.root.handlers=[f]"]
    refused(args, in_tmp, capsys, "FileHandler")


def test_exec_logging_file_handler_empties_a_file(in_tmp, capsys):
    victim = in_tmp / "in_notes.txt"
    victim.write_text("keep me\n")
    conf = _conf(in_tmp, {"hydra/job_logging/wipe.yaml": f"""\
        version: 1
        formatters: {{plain: {{format: "import os; os.system('touch {in_tmp / MARK}')"}}}}
        handlers: {{f: {{class: logging.FileHandler, filename: {victim}, mode: w, formatter: plain}}}}
        root: {{level: INFO, handlers: [f]}}
        """})
    refused([*SYN, *QUIET, "-cd", str(conf), "hydra/job_logging=wipe"], in_tmp, capsys, "file")
    assert victim.read_text() == "keep me\n"


def test_exec_logging_hydras_own_file_handler(in_tmp, capsys):
    refused([*SYN, *QUIET, "hydra/hydra_logging=hydra_debug"], in_tmp, capsys, "FileHandler")


def test_exec_logging_default_job_logging_writes_a_log_file(in_tmp, capsys):
    refused([*SYN, *QUIET, "hydra/job_logging=default"], in_tmp, capsys, "FileHandler")


def test_exec_logging_ext_stream_imports_an_object(in_tmp, capsys):
    args = [*SYN, *QUIET, "hydra.job_logging.handlers.console.stream=ext://subprocess.DEVNULL"]
    refused(args, in_tmp, capsys, "ext://")


def test_exec_logging_formatter_class(in_tmp, capsys):
    args = [*SYN, *QUIET, "+hydra.job_logging.formatters.simple.class=pathlib.Path"]
    refused(args, in_tmp, capsys, "class")


def test_exec_logging_filter_factory(in_tmp, capsys):
    conf = _conf(in_tmp, {"hydra/job_logging/filt.yaml": """\
        version: 1
        filters: {f: {"()": os.getcwd}}
        root: {level: INFO}
        """})
    refused([*SYN, *QUIET, "-cd", str(conf), "hydra/job_logging=filt"], in_tmp, capsys, "import")


def test_exec_logging_socket_handler(in_tmp, capsys):
    args = [*SYN, *QUIET, "hydra.job_logging.handlers.console.class=logging.handlers.SysLogHandler"]
    refused(args, in_tmp, capsys, "SysLogHandler")


def test_exec_logging_file_handler_with_help_flag(in_tmp, capsys):
    refused(["--help", "hydra/hydra_logging=hydra_debug"], in_tmp, capsys, "FileHandler")


def test_exec_experimental_rerun_unpickles(in_tmp, capsys):
    import pickle

    class Plant:
        def __reduce__(self):
            return (os.mkdir, (str(in_tmp / MARK),))

    pkl = in_tmp / "in_config.pickle"
    pkl.write_bytes(pickle.dumps(Plant()))
    refused(["--experimental-rerun", str(pkl)], in_tmp, capsys, "experimental-rerun")


def test_exec_output_subdir_plants_config_files(in_tmp, capsys):
    refused([*SYN, *QUIET, f"hydra.output_subdir={in_tmp / MARK}"], in_tmp, capsys, "output_subdir")


def test_exec_searchpath_package_imports_a_module(tmp_path):
    (tmp_path / "evilmod.py").write_text(f"open({str(tmp_path / MARK)!r}, 'w').write('x')\n")
    refused_proc([*SYN, *QUIET, "hydra.searchpath=[pkg://evilmod]"], tmp_path, "pkg://")


def test_exec_searchpath_in_a_primary_config(in_tmp, capsys):
    conf = _conf(in_tmp, {"mine.yaml": """\
        defaults: [config]
        hydra: {searchpath: ["pkg://evilmod"]}
        """})
    refused(["-cp", str(conf), "-cn", "mine", *SYN, *QUIET], in_tmp, capsys, "pkg://")


def test_exec_config_path_package(in_tmp, capsys):
    refused(["-cp", "pkg://evilmod", *SYN, *QUIET], in_tmp, capsys, "pkg://")


def test_exec_python_tag_in_a_config_file(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/tag.yaml": f"""\
        # @package _global_
        progress: !!python/object/apply:os.mkdir ["{in_tmp / MARK}"]
        """})
    refused([*SYN, *QUIET, "-cd", str(conf), "experiment=tag"], in_tmp, capsys)


def test_exec_joblib_pre_dispatch_expression(in_tmp, capsys):
    args = ["--multirun", *SYN, *QUIET, "hydra/launcher=joblib",
            "hydra.launcher.pre_dispatch='__import__(\"os\").getcwd()'", "source.spec.seed=0,1"]
    refused(args, in_tmp, capsys, "pre_dispatch")


def test_exec_launcher_setup_commands():
    from octascope.app.cli import _check_hydra_node
    from octascope.core.errors import ConfigError

    with pytest.raises(ConfigError, match="setup"):
        _check_hydra_node({"launcher": {"setup": ["touch /tmp/PWNED"]}})
    with pytest.raises(ConfigError, match="additional_parameters"):
        _check_hydra_node({"launcher": {"additional_parameters": {"prolog": "/tmp/x.sh"}}})


# ================================================================================================
# 2. environment variables a job may set
# ================================================================================================

ENV_CASES = {
    "GIT_EXEC_PATH": ("+hydra.job.env_set.GIT_EXEC_PATH=/tmp", "GIT_EXEC_PATH"),
    "MLFLOW_TRACKING_URI": ("+hydra.job.env_set.MLFLOW_TRACKING_URI=file:///tmp/elsewhere", "MLFLOW_TRACKING_URI"),
    "OMPI_MCA_plm_rsh_agent": ("+hydra.job.env_set.OMPI_MCA_plm_rsh_agent=/tmp/x.sh", "OMPI_MCA"),
    "TMPDIR": ("+hydra.job.env_set.TMPDIR=/etc", "TMPDIR"),
    "HOME": ("+hydra.job.env_set.HOME=/tmp", "HOME"),
    "MPLBACKEND module": ("+hydra.job.env_set.MPLBACKEND=module://evil", "MPLBACKEND"),
    "thread count not a number": ("+hydra.job.env_set.OMP_NUM_THREADS=lots", "OMP_NUM_THREADS"),
    "PYTHONWARNINGS": ("+hydra.job.env_set.PYTHONWARNINGS=error", "PYTHONWARNINGS"),
    "env_copy": ("hydra.job.env_copy=[HOME]", "HOME"),
    "lowercase name": ("+hydra.job.env_set.ld_preload=/tmp/x.so", "ld_preload"),
}


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_env_outside_the_allow_list(case, in_tmp, capsys):
    override, needle = ENV_CASES[case]
    refused([*SYN, *QUIET, override], in_tmp, capsys, needle)


def test_env_on_the_allow_list_runs(in_tmp, capsys):
    code, out, err = run_cli([*SYN, *QUIET, "+hydra.job.env_set.OMP_NUM_THREADS=1", "+hydra.job.env_set.MPLBACKEND=agg"], capsys)
    assert code == 0, err


# ================================================================================================
# 3. interpolation resolvers
# ================================================================================================

RESOLVER_CASES = {
    "oc.env in a path": (["source.path=${oc.env:HOME}"], "oc.env"),
    "oc.env in the run name": (["tracking.run_name=${oc.env:PATH}"], "oc.env"),
    "oc.env in the run folder": (["hydra.run.dir=out/${oc.env:USER,x}"], "oc.env"),
    "oc.decode": (["+denoiser.extra=${oc.decode:'{a: 1}'}"], "oc.decode"),
    "oc.select": (["tracking.run_name=${oc.select:progress,x}"], "oc.select"),
    "unknown resolver": (["tracking.run_name=${evil:x}"], "evil"),
}


@pytest.mark.parametrize("case", sorted(RESOLVER_CASES))
def test_resolver_outside_the_allow_list(case, in_tmp, capsys):
    overrides, needle = RESOLVER_CASES[case]
    refused([*SYN, *QUIET, *overrides], in_tmp, capsys, needle)


def test_resolver_oc_create_in_the_hydra_node_from_a_file(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/create.yaml": f"""\
        # @package _global_
        hydra:
          job_logging:
            handlers:
              x: '${{oc.create:{{class: logging.FileHandler, filename: "{in_tmp / MARK}.pth"}}}}'
        """})
    refused([*SYN, *QUIET, "-cd", str(conf), "experiment=create"], in_tmp, capsys, "oc.create")


def test_resolver_now_in_the_run_name_works(in_tmp, capsys):
    code, out, err = run_cli([*SYN, *QUIET, "tracking.run_name=run-${now:%Y}"], capsys)
    assert code == 0, err


# ================================================================================================
# 4. YAML and interpolation budgets
# ================================================================================================


def _laughs(levels: int, width: int) -> str:
    lines = ["# @package _global_", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_yaml_file_too_large(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/big.yaml": "# @package _global_\nprogress: false\n" + "#" * (2 << 20) + "\n"})
    refused([*SYN, *QUIET, "-cd", str(conf), "experiment=big"], in_tmp, capsys, "larger than")


def test_yaml_recursive_alias(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/loop.yaml": "# @package _global_\na: &a [1, *a]\n"})
    refused([*SYN, *QUIET, "-cd", str(conf), "experiment=loop"], in_tmp, capsys)


def test_yaml_nested_too_deeply(in_tmp, capsys):
    conf = _conf(in_tmp, {"experiment/deep.yaml": "# @package _global_\na: " + "[" * 20000 + "]" * 20000 + "\n"})
    refused([*SYN, *QUIET, "-cd", str(conf), "experiment=deep"], in_tmp, capsys)


@pytest.mark.slow
def test_yaml_aliases_expanding_past_the_budget(tmp_path):
    conf = _conf(tmp_path, {"experiment/laughs.yaml": _laughs(5, 30)})  # 30^4 * 9 = 7 M values
    refused_proc([*SYN, *QUIET, "-cd", str(conf), "experiment=laughs"], tmp_path, "aliases", timeout=120)


@pytest.mark.slow
def test_yaml_billion_laughs_is_refused_quickly_in_little_memory(tmp_path):
    conf = _conf(tmp_path, {"experiment/laughs.yaml": _laughs(9, 9)})  # 9^9 = 387 M values
    t0 = time.time()
    refused_proc([*SYN, *QUIET, "-cd", str(conf), "experiment=laughs"], tmp_path, "aliases", timeout=120)
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_interpolation_bomb_is_refused_in_little_memory(tmp_path):
    args = [*SYN, *QUIET, "+x0=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]
    for i in range(1, 9):
        args.append(f"+x{i}='" + "".join(f"${{x{i - 1}}}" for _ in range(12)) + "'")
    refused_proc(args, tmp_path, "expands", timeout=120)


# ================================================================================================
# 5. image readers: damaged, renamed, empty, huge-declared files
# ================================================================================================


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    return path


READER_KINDS = ["npy", "png", "tif", "dm3", "dm4", "emd", "hspy"]


@pytest.mark.parametrize("kind", READER_KINDS)
def test_reader_garbage_bytes(kind, in_tmp, capsys):
    path = _garbage(in_tmp / f"in_garbage.{kind}")
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, path.name)


@pytest.mark.parametrize("kind", READER_KINDS)
def test_reader_truncated_file(kind, in_tmp, capsys, good_files):
    path = truncated(good_files[kind], in_tmp / f"in_cut.{kind}", 0.5)
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, path.name)


@pytest.mark.parametrize("kind", READER_KINDS)
def test_reader_empty_file(kind, in_tmp, capsys):
    path = in_tmp / f"in_empty.{kind}"
    path.write_bytes(b"")
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "empty")


RENAMED = {"npz as npy": ("npz", "npy"), "png as tif": ("png", "tif"), "tif as png": ("tif", "png"),
           "npy as dm4": ("npy", "dm4"), "hspy as emd": ("hspy", "emd"), "dm3 as npy": ("dm3", "npy")}


@pytest.mark.parametrize("case", sorted(RENAMED))
def test_reader_renamed_file(case, in_tmp, capsys, good_files):
    src, suffix = RENAMED[case]
    path = in_tmp / f"in_renamed.{suffix}"
    if src == "npz":
        np.savez(in_tmp / "in_arrays.npz", a=_image())
        (in_tmp / "in_arrays.npz").rename(path)
    else:
        path.write_bytes(good_files[src].read_bytes())
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, path.name)


NPY_DTYPES = {"text": np.array([["a", "b"], ["c", "d"]]), "records": np.zeros((4, 4), dtype=[("x", "f4"), ("y", "f4")]),
              "zero size": np.zeros((0, 64), np.float32), "scalar": np.float32(3.0), "bytes": np.zeros((8, 8), "V4")}


@pytest.mark.parametrize("case", sorted(NPY_DTYPES))
def test_reader_npy_without_pixel_values(case, in_tmp, capsys):
    path = in_tmp / "in_odd.npy"
    np.save(path, NPY_DTYPES[case])
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, path.name)


def test_reader_npy_object_array_is_never_unpickled(in_tmp, capsys):
    path = in_tmp / "in_objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "Python objects")


def test_reader_npy_header_declares_more_than_the_file_holds(in_tmp, capsys):
    path = npy_header_only(in_tmp / "in_liar.npy", (4000, 4000))
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "truncated")


def test_reader_npy_header_declares_a_huge_image(in_tmp, capsys):
    path = npy_header_only(in_tmp / "in_huge.npy", (100000, 100000), "<f8")
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "in_huge.npy")


def test_reader_npy_values_beyond_float32_no_warning(in_tmp, capsys):
    path = in_tmp / "in_overflow.npy"
    np.save(path, np.full((64, 64), 1e300) * _image())
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "NaN/Inf")


def test_reader_png_damaged_header(in_tmp, capsys, good_files):
    data = bytearray(good_files["png"].read_bytes())
    data[12:16] = b"XXXX"
    path = in_tmp / "in_ihdr.png"
    path.write_bytes(bytes(data))
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "in_ihdr.png")


def test_reader_png_20000_square_is_one_line(in_tmp, capsys):
    path = png_bomb(in_tmp / "in_bomb.png", 20000, 20000)
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "crop or bin")


def test_reader_tiff_damaged_ifd(in_tmp, capsys, good_files):
    data = bytearray(good_files["tif"].read_bytes())
    data[4:8] = struct.pack("<I", len(data) + 1000)  # the first IFD beyond the end of the file
    path = in_tmp / "in_ifd.tif"
    path.write_bytes(bytes(data))
    refused(_src(path), in_tmp, capsys, "in_ifd.tif")


def test_reader_tiff_tile_bomb_refused_from_its_header(in_tmp, capsys):
    path = tiff_tile_bomb(in_tmp / "in_tiles.tif", 32768)
    refused(_src(path, "source.pixel_size_A=0.2"), in_tmp, capsys, "crop or bin")


def test_reader_emd_hdf5_without_images(in_tmp, capsys):
    import h5py

    path = in_tmp / "in_nothing.emd"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    refused(_src(path), in_tmp, capsys, "in_nothing.emd")


def test_reader_zspy_folder_that_is_not_zarr(in_tmp, capsys):
    path = in_tmp / "in_folder.zspy"
    path.mkdir()
    (path / "readme.txt").write_text("not zarr")
    refused(_src(path), in_tmp, capsys, "in_folder.zspy")


def test_reader_folder_named_like_an_image(in_tmp, capsys):
    (in_tmp / "in_dir.npy").mkdir()
    refused(_src(in_tmp / "in_dir.npy", "source.pixel_size_A=0.2"), in_tmp, capsys, "directory")


def test_reader_device_named_like_an_image(in_tmp, capsys):
    (in_tmp / "in_zero.npy").symlink_to("/dev/zero")
    refused(_src(in_tmp / "in_zero.npy", "source.pixel_size_A=0.2"), in_tmp, capsys, "regular file")


def test_reader_fifo_named_like_an_image(tmp_path):
    os.mkfifo(tmp_path / "in_pipe.tif")
    refused_proc(_src(tmp_path / "in_pipe.tif"), tmp_path, "regular file", timeout=120)


FRAME_CASES = {"frame 1.5": "source.frame=1.5", "frame abc": "source.frame=abc", "frame true": "source.frame=true",
               "signal_index x": "source.signal_index=x", "signal_index 0.5": "source.signal_index=0.5"}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_reader_index_not_a_whole_number(case, in_tmp, capsys, particle):
    image = np.load(particle[0].split("=", 1)[1])
    path = in_tmp / "in_stack.npy"
    np.save(path, np.stack([image, image, image]))
    refused([f"source.path={path}", particle[1], FRAME_CASES[case], *QUIET], in_tmp, capsys, "whole number")


def test_reader_frame_out_of_range_of_a_stack(in_tmp, capsys):
    path = in_tmp / "in_stack.npy"
    np.save(path, np.stack([_image(seed=s) for s in range(3)]))
    refused(_src(path, "source.pixel_size_A=0.2", "source.frame=-99"), in_tmp, capsys, "out of range")


def test_reader_path_that_is_a_number(in_tmp, capsys):
    refused(["source.path=123", "source.pixel_size_A=0.2", *QUIET], in_tmp, capsys, "text")


def test_reader_comma_in_an_unquoted_file_name_says_how_to_quote(in_tmp, capsys):
    refused(["source.path=in_a,b.npy", "source.pixel_size_A=0.2", *QUIET], in_tmp, capsys, "\"source.path='in_a,b.npy'\"")


@pytest.mark.parametrize("name", ["in_a,b.npy", "in_a=b.npy", "in_a[1].npy", "in_a b (1).npy", "in_a#b.npy",
                                  "in_a:b@c.npy", "in_a'b.npy", "in_a$b.npy"])
def test_quoted_file_names_with_symbols_work(name, in_tmp, capsys):
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    image, _ = make_synthetic(SyntheticSpec(n_cells=(5, 5)))
    np.save(in_tmp / name, image.data)
    quoted = f'"{name}"' if "'" in name else f"'{name}'"
    code, out, err = run_cli([f"source.path={quoted}", f"source.pixel_size_A={image.pixel_size_A}", *QUIET], capsys)
    assert code == 0, err
    assert "columns: Pb 25" in out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tiff 32768² tiles without calibration", "sparse npy 17000² without pixel size",
                                  "npy 16000² without pixel size", "png 20000²", "tiff 16000² tiles without calibration"])
def test_bomb_refused_from_its_header_in_little_memory(case, tmp_path):
    """The file says nothing of its pixel size (the estimate cannot use it) or is over the pixel limit."""
    if case == "tiff 32768² tiles without calibration":
        path, extra = tiff_tile_bomb(tmp_path / "in_bomb.tif", 32768), []
    elif case == "tiff 16000² tiles without calibration":
        path, extra = tiff_tile_bomb(tmp_path / "in_bomb.tif", 16000), []
    elif case == "sparse npy 17000² without pixel size":
        path, extra = sparse_npy(tmp_path / "in_bomb.npy", (17000, 17000)), []
    elif case == "npy 16000² without pixel size":
        path, extra = sparse_npy(tmp_path / "in_bomb.npy", (16000, 16000)), []
    else:
        path, extra = png_bomb(tmp_path / "in_bomb.png", 20000, 20000), ["source.pixel_size_A=0.2"]
    refused_proc(_src(path, *extra), tmp_path, "crop or bin", timeout=300)


# ================================================================================================
# 6. ground-truth tables
# ================================================================================================

TRUTH_CASES = {
    "ragged": "x_A,y_A,species\n1,2,Pb\n3,4,X,9,9\n",
    "empty": "",
    "header only": "x_A,y_A,species\n",
    "non-numeric": "x_A,y_A,species\nabc,2,Pb\n",
    "missing value": "x_A,y_A,species\n1,,Pb\n",
    "infinite": "x_A,y_A,species\ninf,2,Pb\n",
    "binary": None,
    "unknown species": "x_A,y_A,species\n1,2,Zz\n",
}


@pytest.mark.parametrize("case", sorted(TRUTH_CASES))
def test_truth_table(case, in_tmp, capsys, particle):
    path = in_tmp / "in_truth.csv"
    if TRUTH_CASES[case] is None:
        path.write_bytes(b"\xff\xfe\x00\x81" * 200)
    else:
        path.write_text(TRUTH_CASES[case])
    refused([*particle, *QUIET, f"source.truth_path={path}"], in_tmp, capsys, "in_truth.csv")


def test_truth_table_that_is_a_folder(in_tmp, capsys, particle):
    (in_tmp / "in_truth.csv").mkdir()
    refused([*particle, *QUIET, f"source.truth_path={in_tmp / 'in_truth.csv'}"], in_tmp, capsys, "folder")


def test_truth_octahedra_table_ragged(in_tmp, capsys, particle):
    cols, octs = in_tmp / "in_cols.csv", in_tmp / "in_octs.csv"
    cols.write_text("x_A,y_A,species\n1,2,Pb\n")
    octs.write_text("x_A,y_A\n1,2\n1,2,3\n")
    refused([*particle, *QUIET, f"source.truth_path={cols}", f"source.truth_octahedra_path={octs}"], in_tmp, capsys,
            "in_octs.csv")


def test_truth_sidecar_that_is_a_folder(in_tmp, capsys, particle):
    image = Path(particle[0].split("=", 1)[1])
    (in_tmp / "in_qd.npy").write_bytes(image.read_bytes())
    (in_tmp / "in_qd.truth_columns.csv").mkdir()
    refused([f"source.path={in_tmp / 'in_qd.npy'}", particle[1], *QUIET], in_tmp, capsys, "folder")


# ================================================================================================
# 7. run folders
# ================================================================================================


def test_run_dir_that_is_a_file(in_tmp, capsys):
    (in_tmp / "in_file").write_text("x")
    refused([*SYN, *QUIET, f"hydra.run.dir={in_tmp / 'in_file'}"], in_tmp, capsys, "is a file")


def test_run_dir_under_a_file(in_tmp, capsys):
    (in_tmp / "in_file").write_text("x")
    refused([*SYN, *QUIET, f"hydra.run.dir={in_tmp / 'in_file' / 'run'}"], in_tmp, capsys, "is a file")


def test_run_dir_on_a_file_system_that_refuses_folders(in_tmp, capsys):
    refused([*SYN, *QUIET, "hydra.run.dir=/proc/octascope-run"], in_tmp, capsys, "/proc/octascope-run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_dir_in_a_read_only_folder(in_tmp, capsys):
    ro = in_tmp / "in_ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused([*SYN, *QUIET, f"hydra.run.dir={ro / 'run'}"], in_tmp, capsys, "not writable")
    finally:
        ro.chmod(0o755)


def test_sweep_dir_that_is_a_file(in_tmp, capsys):
    (in_tmp / "in_file").write_text("x")
    refused(["--multirun", *SYN, *QUIET, "source.spec.seed=0,1", f"hydra.sweep.dir={in_tmp / 'in_file'}"],
            in_tmp, capsys, "is a file")


def test_failed_run_keeps_the_users_empty_folders(in_tmp, capsys):
    (in_tmp / "in_a" / "b" / "c").mkdir(parents=True)
    noise = in_tmp / "in_noise.npy"
    np.save(noise, np.random.default_rng(0).normal(size=(160, 160)))
    refused([f"source.path={noise}", "source.pixel_size_A=0.2", *QUIET, f"hydra.run.dir={in_tmp / 'in_a/b/c'}"],
            in_tmp, capsys, "lattice")
    assert (in_tmp / "in_a" / "b" / "c").is_dir()


def test_failed_run_removes_only_the_folders_it_created(in_tmp, capsys):
    (in_tmp / "in_a").mkdir()
    noise = in_tmp / "in_noise.npy"
    np.save(noise, np.random.default_rng(0).normal(size=(160, 160)))
    refused([f"source.path={noise}", "source.pixel_size_A=0.2", *QUIET, f"hydra.run.dir={in_tmp / 'in_a/b/c'}"],
            in_tmp, capsys, "lattice")
    assert (in_tmp / "in_a").is_dir() and not (in_tmp / "in_a" / "b").exists()


def test_failed_sweep_leaves_no_multirun_yaml(in_tmp, capsys):
    before = snapshot(in_tmp)
    code, out, err = run_cli(["--multirun", "source.path=in_nope1.npy,in_nope2.npy", "source.pixel_size_A=0.2", *QUIET],
                             capsys)
    assert code == 1 and "2 of 2 jobs failed" in err and "Traceback" not in err
    assert snapshot(in_tmp) == before


# ================================================================================================
# 8. tracking store faults
# ================================================================================================

TRACKED = [*SYN, "progress=false", "figure_formats=[]"]


def _damaged_store(folder: Path) -> None:
    (folder / "mlruns.db").write_bytes(np.random.default_rng(3).bytes(8192))


def _foreign_store(folder: Path) -> None:
    import sqlite3

    con = sqlite3.connect(folder / "mlruns.db")
    con.execute("create table notes (x text)")
    con.commit()
    con.close()


STORE_CASES = {
    "damaged store, run": (_damaged_store, TRACKED, "not a SQLite database"),
    "damaged store, runs": (_damaged_store, ["runs"], "not a SQLite database"),
    "damaged store, fix-stale": (_damaged_store, ["runs", "--fix-stale"], "not a SQLite database"),
    "store is a folder, run": (lambda f: (f / "mlruns.db").mkdir(), TRACKED, "folder"),
    "store is a folder, runs": (lambda f: (f / "mlruns.db").mkdir(), ["runs"], "folder"),
    "someone else's database, run": (_foreign_store, TRACKED, "not an MLflow store"),
    "someone else's database, fix-stale": (_foreign_store, ["runs", "--fix-stale"], "not an MLflow store"),
    "lock file is a folder, run": (lambda f: (f / "mlruns.db.lock").mkdir(), TRACKED, "lock"),
    "store folder refuses files": (lambda f: None, [*TRACKED, "tracking.tracking_uri=sqlite:////proc/mlruns.db"], "/proc"),
    "unknown scheme, runs": (lambda f: None, ["runs", "--tracking-uri", "bogus://x"], "bogus"),
    "damaged store, compare": (_damaged_store, ["compare", "--experiment", "octascope"], "not a SQLite database"),
    "missing store, compare": (lambda f: None, ["compare", "--experiment", "octascope"], "no tracking store"),
}


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_store_fault(case, in_tmp, capsys):
    prepare, args, needle = STORE_CASES[case]
    prepare(in_tmp)
    refused(args, in_tmp, capsys, needle)


@pytest.mark.parametrize("args", [["runs"], ["runs", "--fix-stale"]])
def test_store_missing_is_not_created_and_no_mlflow_lines(args, in_tmp, capsys):
    before = snapshot(in_tmp)
    code, out, err = run_cli(args, capsys)
    assert code == 0 and err.strip() == "", err
    assert "INFO" not in out + err
    assert snapshot(in_tmp) == before


@pytest.mark.slow  # a whole tracked run: MLflow creates the store
def test_store_follows_the_umask(in_tmp, capsys):
    import stat

    old = os.umask(0o002)
    try:
        code, out, err = run_cli(TRACKED, capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((in_tmp / "mlruns.db").stat().st_mode) == 0o664


def test_git_gets_a_minimal_environment(monkeypatch):
    from octascope.results.tracking import git_environment

    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_DIR", "/tmp")
    env = git_environment()
    assert not any(k.startswith("GIT_") and k not in ("GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_OPTIONAL_LOCKS",
                                                      "GIT_TERMINAL_PROMPT") for k in env)
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and "HOME" not in env


def _hold_lock(db: Path, seconds: float, release: Path | None = None) -> subprocess.Popen:
    """Another writer: holds ``db`` exclusively for ``seconds``, or until the file ``release`` appears."""
    code = ("import os, sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
            f"t = time.time()\nwhile time.time() - t < {seconds} and not os.path.exists({str(release)!r}):\n"
            "    time.sleep(0.05)\n"
            "c.execute('ROLLBACK')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_busy_store_is_waited_for(tmp_path):
    assert run_proc(TRACKED, tmp_path)[0] == 0  # a store with one run
    release = tmp_path.parent / f"{tmp_path.name}.release"
    holder = _hold_lock(tmp_path / "mlruns.db", 240, release)
    proc = _start(TRACKED, tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    t0 = time.time()
    while not any("is locked by another process; waiting up to" in line for line in lines) and time.time() - t0 < 200:
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    release.write_text("")  # the other writer finishes: the run goes on
    holder.wait(timeout=60)
    proc.wait(timeout=300)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "is locked by another process; waiting up to" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("args", [TRACKED, ["runs"], ["runs", "--fix-stale"]], ids=["run", "runs", "fix-stale"])
def test_store_locked_past_the_bound_is_one_line(tmp_path, args):
    assert run_proc(TRACKED, tmp_path)[0] == 0
    holder = _hold_lock(tmp_path / "mlruns.db", 60)
    try:
        before = snapshot(tmp_path)
        code, out, err, peak, _ = run_proc(args, tmp_path, env=_env(OCTASCOPE_STORE_WAIT_S="2"))
        after = snapshot(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert_contract(code, out, err, {k: v for k, v in before.items() if "mlruns" not in k},
                    {k: v for k, v in after.items() if "mlruns" not in k}, "stayed locked",
                    also=("octascope: the tracking store",))


# ================================================================================================
# 9. signals and kills
# ================================================================================================

LONG = ["source=synthetic", "source.spec.n_cells=[14,14]", "progress=true", "figure_formats=[png]"]


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "octascope.app.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, lines, text, timeout=300):
    t0 = time.time()
    while not any(text in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.time() - t0 < timeout, "".join(lines)
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_a_sweep_leaves_nothing(tmp_path, sig):
    before = snapshot(tmp_path)
    proc = _start(["--multirun", *LONG, "tracking.enabled=false", "source.spec.seed=0,1"], tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    _wait_for(proc, lines, "[2/")
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(10)
    out = proc.stdout.read()
    err = "".join(lines)
    progress = tuple(f"[{i}/" for i in range(1, 10))
    assert_contract(proc.returncode, out, err, before, snapshot(tmp_path), sig.name, expect=128 + sig, also=progress)


@pytest.mark.slow
def test_signal_in_a_run_keeps_the_users_folders(tmp_path):
    (tmp_path / "in_a").mkdir()
    before = snapshot(tmp_path)
    proc = _start([*LONG, "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'in_a/b/c'}"], tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    _wait_for(proc, lines, "[2/")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(10)
    out = proc.stdout.read()
    progress = tuple(f"[{i}/" for i in range(1, 10))
    assert_contract(proc.returncode, out, "".join(lines), before, snapshot(tmp_path), "SIGTERM", expect=143, also=progress)


@pytest.mark.slow
def test_sigkill_before_tracking_leaves_a_folder_fix_stale_removes(tmp_path):
    # killed in its locator: the folder is claimed, nothing is written yet (outputs and tracking come after
    # the analysis), so the kill must land inside the analysis, not right after the claim (a small image's
    # whole analysis can finish in the time a poll takes to see the claim)
    proc = _start(["source=synthetic", "source.spec.n_cells=[14,14]", "progress=true", "figure_formats=[]"], tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    _wait_for(proc, lines, "[2/")
    assert list(tmp_path.glob("outputs/*/*/.octascope-run"))
    proc.kill()
    proc.wait()
    (folder,) = [p for p in tmp_path.glob("outputs/*/*") if p.is_dir()]
    had_store = (tmp_path / "mlruns.db").exists()
    code, out, err, _, _ = run_proc(["runs", "--fix-stale"], tmp_path)
    assert code == 0 and err.strip() == "" and "INFO" not in out, out + err
    assert not folder.exists()
    assert (tmp_path / "mlruns.db").exists() == had_store  # no store created by --fix-stale
