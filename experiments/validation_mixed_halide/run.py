"""The validation_mixed_halide experiment: `python experiments/validation_mixed_halide/run.py` (see README.md beside this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import validation_report  # noqa: E402

if __name__ == "__main__":
    sys.exit(validation_report.main("validation_mixed_halide"))
