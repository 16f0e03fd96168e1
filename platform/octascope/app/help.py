"""The command's own face: ``octascope --help`` and ``octascope --version`` (Hydra's help stays at
``octascope --hydra-help``; the configuration at ``octascope --cfg job``)."""

from __future__ import annotations

from octascope.core.registry import get_registry, package_version

HELP = """\
usage: octascope [KEY=VALUE ...] [--multirun] [--cfg job] [--hydra-help]
       octascope {plugins,runs,compare} [--help]
       python -m octascope.sim [--help]

Map octahedral tilts (θ1, θ2, θ3) in perovskite nanocrystals from iDPC/iCoM-STEM images:
locate and classify the atomic columns, build the Pb-X network, measure every octahedron
per particle, core and shell, with uncertainties. Every run writes its tables and figures
to outputs/<date>/<time>-<id>/ and is tracked in MLflow (sqlite:///mlruns.db).

Configuration (Hydra): choose a plugin per stage (source, denoiser, locator, classifier,
network, metric) with GROUP=OPTION, set a value with KEY=VALUE; `octascope --cfg job`
prints every key, conf/ holds the defaults, docs/configuration.md explains them.

commands:
  (none)      analyse an image: the bundled example, source.path=FILE, or a session
              (source.path a quoted glob or a folder: every image file in it, in parallel)
  plugins     list the registered plugins (plugins STAGE: with their parameters)
  runs        list the tracked runs: input, status, headline tilt, output folder
  compare     compare runs of an experiment (structural results, or accuracy vs truth)
  python -m octascope.sim   simulate an image with its ground truth (MD + multislice)

examples:
  octascope                                            # the bundled example
  octascope source.path=particle03.emd denoiser=bm3d   # your file, BM3D denoising
  octascope source.path='session/*.emd'                # a session: every frame, session.csv
  octascope --multirun denoiser=none,bm3d,absf         # a sweep, one MLflow run per job
  octascope compare --experiment octascope             # the runs side by side

options:
  -h, --help      this help          --version    octascope's and the plugins' versions
  --hydra-help    Hydra's own help   --cfg job    print the composed configuration
  -m, --multirun  one job per value of swept keys (hydra/launcher=slurm: on a cluster)

More: README.md, docs/outputs.md (what a run writes), docs/configuration.md."""


def version_text() -> str:
    """``octascope <version>`` and one line per distribution that registers plugins."""

    lines = [f"octascope {package_version('octascope')}"]
    seen: dict[tuple[str, str], int] = {}
    try:
        for info in get_registry().info(None):
            key = (info.distribution or "(in-tree)", info.version or "")
            seen[key] = seen.get(key, 0) + 1
    except Exception as exc:  # a broken plugin must not hide the version
        lines.append(f"plugins not listed ({exc.__class__.__name__}: {exc})")
    for (dist, ver), n in sorted(seen.items()):
        lines.append(f"plugins from {dist} {ver}: {n}")
    return "\n".join(lines)


PLUGINS_HELP = """\
usage: octascope plugins [STAGE]

List the registered plugins: stage, name, distribution and version, summary. With a STAGE
(source, denoiser, locator, classifier, network, metric) each plugin's parameters follow
(name, type = default [unit] — description).

  octascope plugins             # every plugin
  octascope plugins denoiser    # the denoisers with their parameters"""
