"""Average the weights of several runs into one params-only checkpoint (model soups, DiWA).

    python -m netlab.tools.soup --workdirs runs/a runs/b runs/c --out runs/soup
    python -m netlab.tools.soup --workdirs runs/a runs/b runs/c --out runs/greedy \\
        --greedy --config configs/classify_digits.py:cpu --metric test_accuracy [--config.a.b=v]
    python -m netlab.tools.soup --workdirs runs/a runs/b runs/c --out runs/best \\
        --combinatorial --config configs/classify_digits.py:cpu --metric test_accuracy

then start or evaluate a run from it with `--config.checkpoint.init_from=runs/soup`.

- Uniform soup / DiWA (Wortsman et al. 2022, "Model soups", eq. 1; Ramé et al. 2022, "Diverse
  Weight Averaging for Out-of-Distribution Generalization", eq. 4): the parameter-wise mean of M
  runs fine-tuned from one shared initialisation. Averaging is only meaningful for runs that share
  that initialisation (they stay in one linearly connected basin); the tool checks that the trees
  match, not the history: start the runs from one `checkpoint.init_from`.
- Greedy soup (Wortsman et al. 2022, Recipe 1; DiWA's "restricted" variant): sort the runs by
  their own held-out score, start from the best, and add each next run only if the score of the
  average does not drop. The score is the scalar `--metric` of the task's `evaluate` (the split
  the task evaluates on; `--mode min` for a loss or a distance such as FD), with the model of
  `--config`. Non-parameter state (batch statistics, routing biases) is the config's fresh
  initialisation during that evaluation: models with such state are scored approximately.

- Combinatorial soup (`--combinatorial`): the exhaustive version of the greedy search, the
  average of every non-empty subset of the runs scored the same way and the best kept (2^M - 1
  evaluations, so at most 12 runs); it finds subsets the greedy order misses.
- DCA / DCWA (Shen & Cremers 2022, "Deep Combinatorial Aggregation", Sec. 3): the runs are K
  instances of every component (a layer: the params of one module, `granularity="module"`; one
  array, `"leaf"`; the whole model, `"model"`). DCA predicts with random combinations: each
  proposal takes every component from an instance drawn independently (`dca_proposals`), and the
  prediction is the mean over proposals (`dca_predict`). DCWA ("weight averaging") replaces the K
  instances of every component by their mean, one network with one forward pass (`dcwa`); since
  every component is averaged over the same K instances, it is the uniform soup of the K runs,
  whatever the granularity. The paper trains the instances jointly with a consistency loss (KL to
  the prediction of another random proposal) so that they stay compatible; here the instances
  are independent runs from one initialisation (DiWA's setting), and no DCA training loop is
  implemented.

Each run contributes its newest checkpoint's `params` (not EMA slots). The mean is taken in
float64 as theta_1 + sum_k (theta_k - theta_1) / M and cast back to each leaf's dtype, so
averaging identical runs returns them bit for bit. Bad input (a workdir without a checkpoint, runs
of different models, an output folder that already holds one) is one line and exit status 2, and
nothing is written.
"""

import argparse
import json
import os
import sys
import tempfile

from netlab.errors import UserError

MODES = ("max", "min")
GRANULARITIES = ("model", "module", "leaf")
MAX_COMBINATORIAL = 12


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m netlab.tools.soup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdirs", nargs="+", required=True, help="runs to average (>= 1)")
    p.add_argument("--out", required=True, help="folder for the params-only checkpoint")
    p.add_argument("--greedy", action="store_true", help="greedy soup (needs --config, --metric)")
    p.add_argument(
        "--combinatorial", action="store_true", help="best of all subsets (--config, --metric)"
    )
    p.add_argument("--config", default="", help="configs/<file>.py[:preset] of the runs' model")
    p.add_argument("--metric", default="", help="evaluation scalar that scores a soup")
    p.add_argument("--mode", default="max", choices=MODES, help="max: higher is better")
    from netlab import configlib

    args, rest = p.parse_known_args(argv)
    overrides = configlib.parse_overrides(rest)
    if args.greedy and args.combinatorial:
        raise UserError("--greedy and --combinatorial: choose one search")
    flag = "--greedy" if args.greedy else "--combinatorial"
    if args.combinatorial and len(args.workdirs) > MAX_COMBINATORIAL:
        raise UserError(
            f"--combinatorial over {len(args.workdirs)} runs: give at most {MAX_COMBINATORIAL} "
            "runs (2^M - 1 evaluations) or use --greedy"
        )
    if (args.greedy or args.combinatorial) and not (args.config and args.metric):
        raise UserError(
            f"{flag} scores each soup with the task's evaluation: give --config "
            "configs/<file>.py[:preset] and --metric NAME (a scalar the task reports)"
        )
    return args, overrides


# --------------------------------------------------------------------------------------------------
# Reading and checking.


def _ckpt_dir(workdir):
    workdir = os.path.abspath(workdir)
    sub = os.path.join(workdir, "ckpt")
    return sub if os.path.isdir(sub) else workdir


def saved_summary(workdir) -> tuple:
    """(newest step, {path: [shape, dtype]} of its params) from Orbax's metadata (no arrays)."""
    from netlab.checkpoint import compat, manager

    directory = _ckpt_dir(workdir)
    step = manager.latest_step(directory)
    if step is None:
        raise UserError(
            f"{workdir}: no checkpoint (expected {os.path.join(workdir, 'ckpt', '<step>')}); "
            "give the workdir of a run that saved one"
        )
    with manager._reader(directory, metadata=True) as mngr, manager._quiet_absl():
        md = mngr.item_metadata(step)
    if not md or md.get("params") is None:
        raise UserError(f"{workdir}: step {step} has no readable params item")
    return step, md["params"], compat.summary(md["params"], ("params",))


def _first_difference(mine: dict, theirs: dict):
    diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if not diff:
        return None
    show = lambda e: "absent" if e is None else f"{e[0]} {e[1]}"  # noqa: E731
    more = f" (+{len(diff) - 1} more)" if len(diff) > 1 else ""
    return f"{diff[0]} is {show(theirs.get(diff[0]))}, not {show(mine.get(diff[0]))}{more}"


def check_same_model(workdirs) -> list:
    """Each workdir's (step, params metadata, summary); a UserError naming the first
    difference."""
    found = [saved_summary(w) for w in workdirs]
    for w, (_, _, summary) in zip(workdirs[1:], found[1:]):
        detail = _first_difference(found[0][2], summary)
        if detail:
            raise UserError(
                f"{w} holds a different model than {workdirs[0]} ({detail}); "
                "average runs of one model"
            )
    return found


def read_params(workdir, abstract):
    """The newest checkpoint's params onto `abstract` (ShapeDtypeStructs with shardings)."""
    import jax
    import numpy as np

    from netlab.checkpoint import manager

    params, _ = manager.restore_params(workdir, abstract)
    return jax.tree.map(np.asarray, params)


def abstract_from_metadata(md):
    import jax

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), md)


# --------------------------------------------------------------------------------------------------
# Averaging.


def average(trees):
    """Parameter-wise mean: theta_1 + sum_k (theta_k - theta_1) / M in float64, cast back."""
    import jax
    import numpy as np

    def mean(first, *rest):
        f = np.asarray(first)
        acc = f.astype(np.float64)
        if rest:
            acc = acc + sum(np.asarray(r, np.float64) - acc for r in rest) / (len(rest) + 1)
        return acc.astype(f.dtype)

    return jax.tree.map(mean, *trees)


def greedy(trees, score, mode="max"):
    """Wortsman et al. Recipe 1: (soup, indices kept, scores). `score(params) -> float`."""
    better = (lambda a, b: a >= b) if mode == "max" else (lambda a, b: a <= b)
    own = [float(score(t)) for t in trees]
    order = sorted(range(len(trees)), key=lambda i: -own[i] if mode == "max" else own[i])
    kept, best = [order[0]], own[order[0]]
    for i in order[1:]:
        candidate = float(score(average([trees[k] for k in kept + [i]])))
        if better(candidate, best):
            kept, best = kept + [i], candidate
    return average([trees[k] for k in kept]), kept, {"individual": own, "soup": best}


def combinatorial(trees, score, mode="max"):
    """The best-scoring average over all non-empty subsets of `trees`: (soup, indices, scores).
    Ties go to the subset met first (by size, then lexicographically)."""
    import itertools

    if len(trees) > MAX_COMBINATORIAL:
        raise UserError(
            f"--combinatorial over {len(trees)} runs is {2 ** len(trees) - 1} evaluations; "
            f"give at most {MAX_COMBINATORIAL} runs or use --greedy"
        )
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    own = [float(score(t)) for t in trees]
    best_subset, best = None, None
    for size in range(1, len(trees) + 1):
        for subset in itertools.combinations(range(len(trees)), size):
            value = (
                own[subset[0]] if size == 1 else float(score(average([trees[k] for k in subset])))
            )
            if best is None or better(value, best):
                best_subset, best = list(subset), value
    return average([trees[k] for k in best_subset]), best_subset, {"individual": own, "soup": best}


# --------------------------------------------------------------------------------------------------
# Deep Combinatorial Aggregation (Shen & Cremers 2022).


def components(tree, granularity="module"):
    """Each leaf's component id: the whole model, its module (the path without the leaf's own
    name, e.g. kernel and bias of one Dense), or the leaf itself."""
    import jax

    if granularity not in GRANULARITIES:
        raise UserError(f"granularity={granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    cut = {"model": lambda p: (), "module": lambda p: p[:-1], "leaf": lambda p: p}[granularity]
    keys = [jax.tree_util.keystr(cut(p)) for p in paths]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return [ids[k] for k in keys]


def dca_proposals(trees, num, granularity="module", seed=0):
    """`num` random combinations: every component of a proposal comes from one instance drawn
    uniformly and independently per component (DCA's forward pass)."""
    import jax
    import numpy as np

    ids = components(trees[0], granularity)
    rng = np.random.default_rng(seed)
    leaves = [jax.tree.leaves(t) for t in trees]
    treedef = jax.tree.structure(trees[0])
    out = []
    for _ in range(num):
        pick = rng.integers(0, len(trees), max(ids) + 1)
        out.append(jax.tree.unflatten(treedef, [leaves[pick[c]][i] for i, c in enumerate(ids)]))
    return out


def dca_predict(apply, trees, x, num=8, granularity="module", seed=0):
    """DCA's prediction: the mean of `apply(params, x)` (e.g. class probabilities) over `num`
    random proposals."""
    import numpy as np

    proposals = dca_proposals(trees, num, granularity, seed)
    return np.mean([np.asarray(apply(p, x)) for p in proposals], axis=0)


def dcwa(trees, granularity="module"):
    """DCWA: every component's K instances replaced by their mean (= the uniform soup)."""
    components(trees[0], granularity)  # checks the granularity
    return average(trees)


# --------------------------------------------------------------------------------------------------
# Writing.


def check_out(out):
    ckdir = os.path.join(os.path.abspath(out), "ckpt")
    if os.path.isdir(ckdir) and os.listdir(ckdir):
        raise UserError(f"--out {out}: {ckdir} already holds a checkpoint; choose a new folder")
    return ckdir


def write(params, out, meta: dict) -> str:
    """Step 0 of `<out>/ckpt` with the params and meta items (the layout `checkpoint.init_from`
    reads, as `netlab.checkpoint.manager` writes it)."""
    from netlab.checkpoint.manager import write_params

    return write_params(check_out(out), params, meta)


def _scorer(cfg, metric, scratch):
    """score(params) -> the task's evaluation scalar `metric` (fresh non-parameter state); the
    evaluation writes what it writes (samples, images) under `scratch`."""
    from netlab.train.trainer import Trainer

    trainer = Trainer(cfg)
    model_state = trainer.init_state().model_state

    def score(params):
        with trainer.context():
            scalars, _ = trainer.task.evaluate(params, model_state, 0, scratch)
        if metric not in scalars:
            raise UserError(
                f"--metric {metric}: the task reports {', '.join(sorted(scalars)) or 'nothing'}"
            )
        return float(scalars[metric])

    return trainer, score


def run(args, overrides) -> dict:
    with tempfile.TemporaryDirectory(prefix="soup-eval-") as scratch:
        return _run(args, overrides, scratch)


def _run(args, overrides, scratch) -> dict:
    from netlab.checkpoint import compat

    check_out(args.out)
    found = check_same_model(args.workdirs)
    if args.greedy or args.combinatorial:
        from netlab import configlib
        from netlab.train import validate

        cfg = configlib.load(args.config, overrides=overrides)
        validate.config(cfg)
        trainer, score = _scorer(cfg, args.metric, scratch)
        abstract = trainer.abstract_state.params
        detail = _first_difference(compat.summary(abstract, ("params",)), found[0][2])
        if detail:
            raise UserError(
                f"--config {args.config}: the runs hold a different model ({detail} in this "
                "config); give the config the runs were trained with"
            )
    else:
        abstract = abstract_from_metadata(found[0][1])
    trees = [read_params(w, abstract) for w in args.workdirs]
    info = {"method": "uniform", "workdirs": [os.path.abspath(w) for w in args.workdirs]}
    info["steps"] = [int(s) for s, _, _ in found]
    if args.greedy or args.combinatorial:
        method = "greedy" if args.greedy else "combinatorial"
        search = greedy if args.greedy else combinatorial
        soup, kept, scores = search(trees, score, args.mode)
        info.update(method=method, metric=args.metric, mode=args.mode, scores=scores)
        info["kept"] = [info["workdirs"][k] for k in kept]
    else:
        soup = average(trees)
    meta = {"task": "soup", "soup": info, "params": found[0][2]}
    info["checkpoint"] = write(soup, args.out, json.loads(json.dumps(meta)))
    return info


def main(argv=None) -> int:
    try:
        args, overrides = _parse(sys.argv[1:] if argv is None else argv)
        info = run(args, overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kept = info.get("kept", info["workdirs"])
    print(
        f"wrote the {info['method']} soup of {len(kept)} of {len(info['workdirs'])} runs to "
        f"{info['checkpoint']} (use --config.checkpoint.init_from={args.out})"
    )
    if "scores" in info:
        print(
            f"{info['metric']}: runs {info['scores']['individual']}, soup {info['scores']['soup']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
