"""A torchrun entry point that fails with a dataflex error on every rank (see test_torchrun.py)."""

import sys

from dataflex.errors import ConfigError
from dataflex.relaunch import report_error

if __name__ == "__main__":
    report_error("dataflex-cli train", ConfigError("dataset 'nope' is not in dataset_info.json."))
    sys.exit(1)
