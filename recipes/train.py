#!/usr/bin/env python
"""Train a refcal_zoo entry with Accelerate.

    accelerate launch recipes/train.py                                  # embedded default: resnet8 on digits-LT
    accelerate launch recipes/train.py --config recipes/configs/resnet32-cifar10lt-refcal.yaml \
        dataset.path=../shared/datasets/cifar10 train.epochs=5

Any config key can be overridden as ``section.key=value``. Writes the run folder (default ``runs/<name>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in the output folder (or discard an unfinished one)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run of this configuration from its newest checkpoint")
    parser.add_argument("--respeed", action="store_true",
                        help="with --resume: choose precision, memory layout and compilation for this machine again "
                             "instead of keeping the run's (e.g. finish a GPU bf16 run on a CPU in fp32); the run "
                             "record names each stretch's precision; no longer bit-identical")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)

    from refcal_zoo.config import load_config
    from refcal_zoo.engine import train
    from refcal_zoo.engine.validate import registry_problems
    from refcal_zoo.errors import RefCalZooError

    try:
        cfg = load_config(args.config, args.overrides, extra_checks=[registry_problems])  # every problem at once
        train(cfg, overwrite=args.overwrite, resume=args.resume, respeed=args.respeed)
    except RefCalZooError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk or a folder that became unwritable: one line, the run folder untouched
        print(f"error: {type(exc).__name__}: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
