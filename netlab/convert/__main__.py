"""``python -m netlab.convert KIND SOURCE OUTDIR [--opt NAME=VALUE ...]`` | ``list``.

Reads SOURCE (a .pt/.pth/.bin/.safetensors state dict or a diffusers model folder), converts it
with the converter KIND (``list`` shows them), writes a params-only checkpoint under OUTDIR that
``--config.checkpoint.init_from=OUTDIR`` reads, and prints the netlab config fields that build the
matching model. ``--opt`` passes a converter setting the state dict does not hold (e.g.
``--opt k=3`` for SGConv's K); from a diffusers folder, its config.json supplies the head count,
sample size and norm eps (``--opt`` still wins). A bad file, key or shape is one ``error:`` line
and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys

from netlab.convert import dit, io, pyg, unet
from netlab.errors import UserError
from netlab.registry import check_choice

CONVERTERS = {**dit.CONVERTERS, **unet.CONVERTERS, **pyg.CONVERTERS}
SOURCES = {
    "dit": "DiT, diffusers or original layout",
    "dit.diffusers": "diffusers DiTTransformer2DModel",
    "dit.original": "original DiT .pt (facebookresearch/DiT)",
    "unet": "diffusers UNet2DModel in ADM layout",
    **{k: "PyG " + fn.__doc__.split("`")[1].split("(")[0] for k, fn in pyg.CONVERTERS.items()},
}


def _keyword_only(fn) -> list:
    return [n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY]


def _options(fn, pairs) -> dict:
    allowed = _keyword_only(fn)
    out = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        if not eq or name not in allowed:
            raise UserError(
                f"--opt {pair!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join(allowed) or '(none for this kind)'}"
            )
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list"]:
        for name, fn in CONVERTERS.items():
            print(f"{name:15s} {SOURCES[name]:40s} options: {', '.join(_keyword_only(fn))}")
        return 0
    p = argparse.ArgumentParser(prog="python -m netlab.convert", description=__doc__.split("\n")[0])
    p.add_argument("kind", help="converter name (python -m netlab.convert list)")
    p.add_argument("source", help="state dict file or diffusers model folder")
    p.add_argument("outdir", help="folder for the params-only checkpoint (init_from)")
    p.add_argument("--opt", action="append", default=[], help="NAME=VALUE converter setting")
    args = p.parse_args(argv)
    try:
        check_choice("kind", args.kind, tuple(CONVERTERS))
        fn = CONVERTERS[args.kind]
        opts = _options(fn, args.opt)
        found = io.folder_options(args.source)  # a diffusers folder's config.json
        found = {k: v for k, v in found.items() if k in _keyword_only(fn)}
        converted = fn(io.load(args.source), **{**found, **opts})
        ckdir = io.save(converted, args.outdir, source=args.source)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {ckdir} (use --config.checkpoint.init_from={args.outdir})")
    print(converted.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
