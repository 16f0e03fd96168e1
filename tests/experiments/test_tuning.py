"""Tuning against simulated truth (experiments/tuning/): the Optuna sweeper passes octascope's run
checks, and what it could be made to import or write does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from octascope.app import policy
from octascope.core.errors import ConfigError

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper not installed "
                    "(pip install -e '.[tuning]')")

TUNING_CONF = Path(__file__).resolve().parents[2] / "experiments" / "tuning" / "conf"


def _check(*overrides: str, conf: Path = TUNING_CONF) -> list[str]:
    from octascope.app.cli import check_command_line

    return check_command_line(["--config-dir", str(conf), "experiment=tune_locator_f1", "~tune", *overrides])


def test_tuning_experiment_passes_the_run_checks():
    _check()


@pytest.mark.parametrize("override", ["hydra.sweeper.custom_search_space=os.system",
                                      "hydra.sweeper.storage=sqlite:////tmp/anywhere.db"])
def test_sweeper_keys_that_import_or_write_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        _check(override)


def test_only_optuna_samplers_may_be_built(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    text = (TUNING_CONF / "experiment" / "tune_locator_f1.yaml").read_text()
    (conf / "tune_locator_f1.yaml").write_text(text.replace("    sampler:\n", "    sampler:\n      _target_: builtins.eval\n"))
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.sampler\._target_"):
        _check(conf=conf.parent)
    assert policy.hydra_target_allowed("hydra.sweeper.sampler._target_", "optuna.samplers.TPESampler", set())
    assert not policy.hydra_target_allowed("hydra.sweeper.sampler._target_", "os.system", {"os.system"})
    assert not policy.hydra_target_allowed("hydra.launcher.setup._target_", "x.Launcher", {"x.Launcher"})
