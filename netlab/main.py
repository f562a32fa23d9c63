"""netlab's command line.

    python -m netlab.main --config configs/<file>.py[:preset] --workdir DIR [--config.a.b=v ...]

Running the same command again resumes from the latest checkpoint in DIR. Bad input prints a
one-line error that names the fix and exits with status 2, before anything is written. A fault of
the machine (disk full, permission denied, unreadable checkpoints) is one line and status 1; the
last complete checkpoint is kept. Ctrl-C (SIGINT) and SIGTERM save the current step and exit with
130 and 0; pressing Ctrl-C twice quits without saving.
"""

import argparse
import sys

from netlab.errors import UserError
from netlab.train import signals

USAGE = (
    "python -m netlab.main --config configs/<file>.py[:preset] --workdir DIR [--config.a.b=v ...]"
)


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m netlab.main",
        usage=USAGE,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
    parser.add_argument(
        "--workdir", required=True, help="run folder: config.json, ckpt/, metrics.jsonl, tb/"
    )
    from netlab import configlib

    args, rest = parser.parse_known_args(argv)
    return args, configlib.parse_overrides(rest)


def _one_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv=None) -> int:
    stop = signals.STOP
    stop.reset()
    installed = stop.install()  # before the slow imports: no signal is lost in start-up
    try:
        args, overrides = parse(sys.argv[1:] if argv is None else argv)
        from netlab.train import validate

        validate.workdir(args.workdir)
        stop.check()
        from netlab import configlib

        cfg = configlib.load(args.config, overrides=overrides)
        stop.check()
        from netlab.train import loop

        result = loop.run(cfg, args.workdir)
    except UserError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except signals.Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            "error: interrupted; the step in progress was not saved, the last checkpoint is "
            "kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except (OSError, FloatingPointError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        if installed:
            stop.uninstall()
    if result["stopped"] is not None:
        return signals.EXIT_CODES.get(result["stopped"], 0)
    if result["eval"] and result["lead"]:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in result["eval"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
