"""netlab's command line.

    python -m netlab.main --config configs/<file>.py[:preset] --workdir DIR [--config.a.b=v ...]

Running the same command again resumes from the latest checkpoint in DIR. Bad input prints a
one-line error that names the fix and exits with status 2, before anything is written.
"""
import argparse
import sys

from netlab.errors import UserError

USAGE = "python -m netlab.main --config configs/<file>.py[:preset] --workdir DIR [--config.a.b=v ...]"


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m netlab.main", usage=USAGE, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
    parser.add_argument("--workdir", required=True, help="run folder: config.json, ckpt/, metrics.jsonl, tb/")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        if not item.startswith("--config."):
            raise UserError(f"unexpected argument {item!r}; overrides look like --config.train.steps=100")
        key, sep, value = item[len("--config."):].partition("=")
        if not sep:
            raise UserError(f"{item!r} has no value; write --config.{key}=VALUE")
        overrides[key] = value
    return args, overrides


def main(argv=None) -> int:
    try:
        args, overrides = parse(sys.argv[1:] if argv is None else argv)
        from netlab import configlib
        cfg = configlib.load(args.config, overrides=overrides)
        from netlab.train import loop
        result = loop.run(cfg, args.workdir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["eval"] and result["lead"]:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in result["eval"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
