"""Post-hoc EMA: the weights of a power-function EMA of any width, rebuilt after training.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3
("Post-hoc EMA") and its appendix (equation numbers as the authors' code cites them). A
power-function EMA at time t averages the parameter trajectory with the profile
p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t] (Eq. 119); its relative width is
sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))) (Eq. 123), inverted as the largest real
root of gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + 12 - sigma_rel^-2 (Eq. 126, Alg. 2).
Training keeps two such EMAs (`optimizer.ema_stds`, e.g. (0.05, 0.1); `netlab.train.ema`) and
every checkpoint stores them. Any target profile p_r is then approximated in L2 by a combination
of the stored profiles p_i: solve A x = b with A_ij = <p_i, p_j>, b_i = <p_i, p_r> (closed form
below, Eq. 151 / Alg. 3), and the target EMA is sum_i x_i theta_i, x normalised to sum 1 as in the
authors' code. The solve is in float64 (A is ill-conditioned).

The discrete EMA of `netlab.train.ema` (beta_t = (1 - 1/t)^(gamma + 1) at update t) weights the
parameters after update k by exactly the profile's integral over (k - 1, k], so time is counted
in optimizer steps and a checkpoint of step s holds the profile at t = s (EDM2 counts images; a
constant batch size rescales every t alike, which leaves x unchanged).

CLI (reads `<workdir>/ckpt/<step>/rest`'s EMA slots `ema_std0.050`, ... of every stored step,
writes one params-only checkpoint per sigma_rel that `checkpoint.init_from` accepts):

    python -m netlab.diffusion.posthoc_ema --workdir runs/a --sigma-rel 0.05 0.1 --out runs/phema

Snapshots are the stored checkpoints: train with `checkpoint.max_to_keep=0` (keep all) and
`checkpoint.every` at the snapshot interval (EDM2: every 8 Mi images, ~2% of training), or only
the newest `max_to_keep` survive and the fit is coarse (its profile error is printed). The slot's
sigma_rel is read from its name (3 decimals, as `netlab.train.ema` writes it).
"""

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from netlab.errors import UserError

SLOT = re.compile(r"^ema_std(\d+\.\d+)$")


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function EMA of relative width sigma_rel (Eq. 126)."""
    s = float(sigma_rel)
    if not 0 < s < 12**-0.5:  # gamma > 0 needs sigma_rel below sigma_rel(0) = 1/sqrt(12)
        raise UserError(f"sigma_rel={s}: must lie in (0, {12**-0.5:.4f}); EDM2 uses 0.05..0.2")
    inv = s**-2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    """The relative standard deviation of the profile p_{t,gamma} (Eq. 123)."""
    g = float(gamma)
    return float(np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))))


def profile(tau, t, gamma):
    """p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t], 0 after t."""
    tau = np.asarray(tau, np.float64)
    inside = (tau >= 0) & (tau <= t)
    return np.where(inside, (gamma + 1) * np.clip(tau, 0, t) ** gamma / t ** (gamma + 1), 0.0)


def inner(t_a, gamma_a, t_b, gamma_b):
    """<p_a, p_b> = integral of p_{t_a,gamma_a} p_{t_b,gamma_b} (Eq. 151), broadcasting."""
    t_a, g_a, t_b, g_b = (np.asarray(v, np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    e = np.where(t_a < t_b, g_b, -g_a)
    num = (g_a + 1) * (g_b + 1) * (t_a / t_b) ** e
    return num / ((g_a + g_b + 1) * np.maximum(t_a, t_b))


def solve_weights(ts: Sequence[float], gammas: Sequence[float], t_r: float, gamma_r: float):
    """(x, profile_error): least-squares coefficients of the stored profiles (t_i, gamma_i) for
    the target (t_r, gamma_r), normalised to sum 1, and the fit's relative L2 error
    ||sum_i x_i p_i - p_r|| / ||p_r|| (closed form from the same inner products)."""
    ts, gs = np.asarray(ts, np.float64), np.asarray(gammas, np.float64)
    a = inner(ts[:, None], gs[:, None], ts[None, :], gs[None, :])
    b = inner(ts, gs, t_r, gamma_r)
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    x = x / np.sum(x)
    rr = float(inner(t_r, gamma_r, t_r, gamma_r))
    err2 = max(float(x @ a @ x - 2 * x @ b + rr), 0.0)
    return x, float(np.sqrt(err2 / rr))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    t: float  # EMA time (optimizer steps)
    gamma: float  # the profile's exponent
    params: Any  # the EMA's parameters (a pytree of arrays)


def reconstruct(snapshots: Sequence[Snapshot], sigma_rel: float, t: float | None = None):
    """(params, info): the power-function EMA of width `sigma_rel` at time `t` (default: the
    newest snapshot's), as the least-squares combination of the snapshots with t_i <= t, summed
    in float64 and cast back to each leaf's dtype. info: weights, profile error, times used."""
    import jax

    t = max(s.t for s in snapshots) if t is None else float(t)
    used = [s for s in snapshots if 0 < s.t <= t]
    if not used:
        raise UserError(f"no EMA snapshot at or before t={t}; reconstruct at a later time")
    gamma = sigma_rel_to_gamma(sigma_rel)
    x, err = solve_weights([s.t for s in used], [s.gamma for s in used], t, gamma)

    def combine(*leaves):
        acc = sum(w * np.asarray(leaf, np.float64) for w, leaf in zip(x, leaves))
        return acc.astype(np.asarray(leaves[0]).dtype)

    params = jax.tree.map(combine, *[s.params for s in used])
    info = dict(
        sigma_rel=float(sigma_rel),
        gamma=gamma,
        t=t,
        profile_error=err,
        snapshots=[[s.t, s.gamma, float(w)] for s, w in zip(used, x)],
    )
    return params, info


# --------------------------------------------------------------------------------------------------
# Checkpoints (the layout of `netlab.checkpoint.manager`: <workdir>/ckpt/<step>/{params,rest,meta};
# read with Orbax directly, since a model pillar does not import the engine).


def _manager(ckdir, items, read_only=True):
    import orbax.checkpoint as ocp

    reg = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for name in items:
        if name == "meta":
            reg.add(name, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
            reg.add(name, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        else:
            reg.add(name, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
            reg.add(name, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
    options = ocp.CheckpointManagerOptions(
        read_only=read_only, create=not read_only, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(ckdir, options=options, handler_registry=reg)


def read_snapshots(workdir) -> tuple[list, dict]:
    """(snapshots, meta of the newest step): every power-EMA slot of every stored step."""
    import jax
    import orbax.checkpoint as ocp

    ckdir = os.path.join(os.path.abspath(workdir), "ckpt")
    if not os.path.isdir(ckdir):
        raise UserError(f"--workdir {workdir}: no ckpt/ folder; give a training run's workdir")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    snapshots, meta = [], {}
    with _manager(ckdir, ("rest", "meta")) as mngr:
        steps = sorted(mngr.all_steps())
        for step in steps:
            md = mngr.item_metadata(step)["rest"]
            slots = {k: SLOT.match(k) for k in md["ema"]}
            slots = {k: float(m.group(1)) for k, m in slots.items() if m}
            if not slots:
                raise UserError(
                    f"--workdir {workdir}: step {step} holds no power-EMA slots (ema_std*); "
                    "train with optimizer.ema_stds=(0.05, 0.1)"
                )
            abstract = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), md
            )
            rest = mngr.restore(
                step, args=ocp.args.Composite(rest=ocp.args.StandardRestore(abstract))
            )["rest"]
            for name, std in slots.items():
                tree = jax.tree.map(np.asarray, rest["ema"][name])
                snapshots.append(Snapshot(float(step), sigma_rel_to_gamma(std), tree))
        if steps:
            out = mngr.restore(steps[-1], args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(out["meta"])
    if not snapshots:
        raise UserError(f"--workdir {workdir}: {ckdir} holds no checkpoint")
    return snapshots, meta


def write(params, out, meta: dict) -> str:
    """Step 0 of `<out>/ckpt` with the params and meta items (what `checkpoint.init_from` reads)."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    ckdir = os.path.join(os.path.abspath(out), "ckpt")
    if os.path.isdir(ckdir) and os.listdir(ckdir):
        raise UserError(f"--out: {ckdir} already holds a checkpoint; choose a new folder")
    params = jax.tree.map(jnp.asarray, params)
    with _manager(ckdir, ("params", "meta"), read_only=False) as mngr:
        mngr.save(
            0,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
            ),
        )
        mngr.wait_until_finished()
    return ckdir


def run(workdir, sigma_rels, out, t=None) -> list:
    """Reconstruct every sigma_rel; writes `<out>/sigma_rel_<s>/ckpt/0`; returns the infos."""
    for s in sigma_rels:
        sigma_rel_to_gamma(s)  # bad values fail before anything is read or written
    folders = [os.path.join(out, f"sigma_rel_{float(s):.3f}") for s in sigma_rels]
    for f in folders:
        if os.path.isdir(os.path.join(f, "ckpt")) and os.listdir(os.path.join(f, "ckpt")):
            raise UserError(f"--out {out}: {f} already holds a checkpoint; choose a new folder")
    snapshots, meta = read_snapshots(workdir)
    infos = []
    for s, folder in zip(sigma_rels, folders):
        params, info = reconstruct(snapshots, s, t)
        info["workdir"] = os.path.abspath(workdir)
        new_meta = {"task": meta.get("task", ""), "params": meta.get("params", {})}
        new_meta["posthoc_ema"] = info
        info["checkpoint"] = write(params, folder, json.loads(json.dumps(new_meta)))
        info["folder"] = folder
        infos.append(info)
    return infos


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m netlab.diffusion.posthoc_ema",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="run whose checkpoints hold ema_std* slots")
    p.add_argument("--sigma-rel", type=float, nargs="+", required=True, help="target widths")
    p.add_argument("--out", required=True, help="folder for one checkpoint per sigma_rel")
    p.add_argument("--step", type=float, default=None, help="target time (default: newest)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        infos = run(args.workdir, args.sigma_rel, args.out, args.step)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for info in infos:
        print(
            f"sigma_rel {info['sigma_rel']:.3f} (gamma {info['gamma']:.3f}) at step "
            f"{info['t']:g} from {len(info['snapshots'])} snapshots, profile error "
            f"{info['profile_error']:.2e}: use --config.checkpoint.init_from={info['folder']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
