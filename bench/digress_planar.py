"""DiGress on the regenerated SPECTRE planar set: validity of sampled graphs vs the marginal-noise
baseline (the chain's limit: independent edges with the training edge density, i.e. x_T).

Tiny CPU protocol (not the paper's 10-layer, 1000-step model): ``--steps`` AdamW steps (or until
``--minutes``), batch ``--batch`` of the 128 training graphs, then ``--samples`` graphs from the
trained denoiser and as many from the baseline, each scored with ``netlab.graph.gen_metrics``
(validity = connected and planar, uniqueness, novelty vs train, MMD^2 of degree / clustering /
spectrum vs the 40 test graphs, Gaussian-TV kernel).

    nice -n 19 .venv/bin/python bench/digress_planar.py > runs/digress_planar.log 2>&1
    # writes bench/results/digress_planar.json, .md and .png (DiGress samples, test graphs and
    # marginal-baseline graphs drawn with networkx); --num_nodes 20 --tag _n20: smaller graphs

Options for the validity study: ``--transition uniform`` (the uniform-transition prior,
m = (1/2, 1/2) for edges, instead of DiGress's marginal one; the baseline row stays the
marginal-noise one), ``--sample_T 100,500`` (extra ancestral samplers on finer cosine grids of
the same curve: the network sees t / T_sample), and the edge diagnostic: the trained denoiser's
argmax prediction of the clean test graphs from x_t at a few small t (wrong pairs per graph,
share of exactly recovered graphs, planar validity of the predicted graph), which is what
validity needs at the last sampling steps, and the cross-entropy of the clean pair types against
the per-pair posterior baseline (a model that sees only its own noisy pair): below it, the
network has learned structure even where its argmax still copies x_t.
"""

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from netlab.graph import digress as Dg  # noqa: E402
from netlab.graph import gen_metrics, spectre_data  # noqa: E402


def edge_set(g) -> set:
    return {tuple(sorted(e)) for e in g.edges()}


def sanity_checks(train, test, n_max, samples=4, T=20):
    """The metric and the sampler on known answers: every training / test graph is planar-valid,
    and an oracle denoiser that always predicts the first training graph G samples G exactly."""
    g = train[0]
    a = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()))
    target = jnp.zeros((n_max, n_max), jnp.int32).at[: len(a), : len(a)].set(a.astype(np.int32))

    def oracle(x, e, t, mask, cond):
        return jnp.zeros((*x.shape, 1)), 30.0 * jax.nn.one_hot(jnp.broadcast_to(target, e.shape), 2)

    counts = jnp.full((samples,), g.number_of_nodes())
    m = jnp.asarray([0.9, 0.1])
    ab = jnp.asarray(Dg.cosine_alpha_bar(T), jnp.float32)
    _, es, ms = Dg.sample(oracle, jax.random.key(0), counts, n_max, ab, jnp.ones(1), m)
    got = spectre_data.from_dense(es, ms)
    valid = gen_metrics.VALIDITY["planar"]
    return {
        "train_validity": float(np.mean([valid(h) for h in train])),
        "test_validity": float(np.mean([valid(h) for h in test])),
        "oracle_samples": samples,
        "oracle_exact": int(sum(edge_set(h) == edge_set(g) for h in got)),
        "oracle_validity": float(np.mean([valid(h) for h in got])),
    }


def edge_diagnostic(apply, key, e0, mask, alpha_bar, m_x, m_e, ts, prior=None):
    """Per t: the denoiser's argmax x0 from x_t ~ q(. | test graph) against the test graph;
    `prior`: the data's edge-type marginal (default m_e, the marginal transition's)."""
    T = alpha_bar.shape[0] - 1
    n = e0.shape[-1]
    upper = np.triu(np.ones((n, n), bool), 1) & mask[:, :, None] & mask[:, None, :]
    x0 = np.zeros(mask.shape, np.int32)
    valid = gen_metrics.VALIDITY["planar"]
    predict = jax.jit(lambda xt, et, tf, m: apply(xt, et, tf, m, None)[1])
    out = {}
    for t in ts:
        ab = jnp.full((e0.shape[0],), alpha_bar[t])
        x_t, e_t = Dg.apply_noise(jax.random.fold_in(key, t), x0, e0, mask, ab, m_x, m_e)
        le = predict(x_t, e_t, jnp.full((e0.shape[0],), t / T), mask)
        pred = np.asarray(jnp.argmax(le, -1))
        # cross-entropy of the clean pair types: the denoiser's against the per-pair posterior
        # p(e0 | e_t) proportional to (abar 1[e_t = e0] + (1 - abar) m[e_t]) m[e0], the best a
        # model can do that sees only its own pair (copying is its argmax at small t); below it,
        # the network uses the graph's structure
        logp = np.asarray(jax.nn.log_softmax(le, -1))
        me, et = np.asarray(m_e, np.float64), np.asarray(e_t)
        pe = me if prior is None else np.asarray(prior, np.float64)
        lik = float(alpha_bar[t]) * np.eye(len(me))[et] + (1 - float(alpha_bar[t])) * me[et, None]
        post = lik * pe / (lik * pe).sum(-1, keepdims=True)
        pick = lambda a: np.take_along_axis(a, e0[..., None], -1)[..., 0][upper]  # noqa: E731
        wrong = ((pred != e0) & upper).sum((1, 2))
        noisy = ((np.asarray(e_t) != e0) & upper).sum((1, 2))
        graphs = spectre_data.from_dense(np.where(upper, pred, 0), mask)
        out[int(t)] = {
            "noisy_pairs_per_graph": float(noisy.mean()),
            "wrong_pairs_per_graph": float(wrong.mean()),
            "pair_error": float(wrong.sum() / upper.sum()),
            "exact_graphs": float(np.mean(wrong == 0)),
            "argmax_validity": float(np.mean([valid(g) for g in graphs])),
            "ce_model": float(-pick(logp).mean()),
            "ce_pair_posterior": float(-np.log(pick(post)).mean()),
        }
        print("edge diagnostic t", t, out[int(t)], flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--dx", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lam", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_nodes", type=int, default=64, help="nodes per planar graph (64: SPECTRE)")
    p.add_argument("--tag", default="", help="suffix of the result files (digress_planar<tag>.*)")
    p.add_argument("--transition", default="marginal", choices=("marginal", "uniform"))
    p.add_argument("--sample_T", default="", help="extra sampling step counts, e.g. 500,1000")
    p.add_argument("--de", type=int, default=8)
    p.add_argument("--dy", type=int, default=16)
    args = p.parse_args()

    graphs = spectre_data.generate("planar", 200, seed=args.seed, n=args.num_nodes)
    train, _, test = spectre_data.split(graphs, seed=args.seed)
    e_all, mask_all = spectre_data.to_dense(train)
    n_max = e_all.shape[1]
    sanity = sanity_checks(train, test, n_max)
    print("sanity", sanity, flush=True)
    x_all = np.zeros(mask_all.shape, np.int32)
    m_x, m_e = Dg.type_marginals(x_all, e_all, mask_all, 1, 2)
    m_x, m_e = jnp.asarray(m_x, jnp.float32), jnp.asarray(m_e, jnp.float32)
    m_base = m_e  # the marginal-noise baseline always uses the training marginal
    if args.transition == "uniform":
        m_e = jnp.full(2, 0.5, jnp.float32)
    alpha_bar = jnp.asarray(Dg.cosine_alpha_bar(args.T), jnp.float32)
    model = Dg.DiGress(
        num_node_types=1, dx=args.dx, de=args.de, dy=args.dy, num_layers=args.layers, heads=4
    )
    b = args.batch
    params = jax.jit(model.init)(
        jax.random.key(args.seed), x_all[:b], e_all[:b], jnp.zeros(b), mask_all[:b]
    )
    opt = optax.adamw(args.lr, weight_decay=1e-12)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key, x0, e0, mask):
        kt, kn = jax.random.split(key)
        t = jax.random.randint(kt, (x0.shape[0],), 1, args.T + 1)
        x_t, e_t = Dg.apply_noise(kn, x0, e0, mask, alpha_bar[t], m_x, m_e)

        def loss_fn(p):
            lx, le = model.apply(p, x_t, e_t, t / args.T, mask)
            loss, ce_x, ce_e = Dg.loss_terms(lx, le, x0, e0, mask, args.lam)
            return loss, (ce_x, ce_e)

        (loss, (ce_x, ce_e)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss, ce_e

    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed + 1)
    t0, log = time.time(), []
    steps_done = 0
    for i in range(args.steps):
        idx = rng.choice(len(train), b, replace=False)
        key, k = jax.random.split(key)
        params, opt_state, loss, ce_e = step(
            params, opt_state, k, x_all[idx], e_all[idx], mask_all[idx]
        )
        steps_done = i + 1
        if i % 50 == 0:
            log.append((i, float(loss)))
            print(f"step {i} loss {float(loss):.4f} ce_e {float(ce_e):.4f}", flush=True)
        if time.time() - t0 > 60 * args.minutes:
            break
    train_s = time.time() - t0

    apply = lambda x, e, t, mask, cond: model.apply(params, x, e, t, mask)  # noqa: E731
    counts = jnp.full((args.samples,), n_max)
    t1 = time.time()
    _, es, ms = jax.jit(lambda k: Dg.sample(apply, k, counts, n_max, alpha_bar, m_x, m_e))(
        jax.random.key(args.seed + 2)
    )
    sample_s = time.time() - t1
    generated = spectre_data.from_dense(es, ms)
    extra = {}
    for ts in filter(None, args.sample_T.split(",")):
        ab_s = jnp.asarray(Dg.cosine_alpha_bar(int(ts)), jnp.float32)
        _, es2, ms2 = jax.jit(lambda k: Dg.sample(apply, k, counts, n_max, ab_s, m_x, m_e))(
            jax.random.key(args.seed + 2)
        )
        gs = spectre_data.from_dense(es2, ms2)
        extra[f"digress_sample_T{ts}"] = gen_metrics.evaluate(gs, train, test, "planar")
        extra[f"digress_sample_T{ts}"]["mean_edges"] = float(
            np.mean([g.number_of_edges() for g in gs])
        )
    e_test, mask_test = spectre_data.to_dense(test, n_max)
    ts = sorted({t for t in (1, 2, 5, 10, 25, 50, 75, 90) if t <= args.T})
    diag = edge_diagnostic(
        apply, jax.random.key(args.seed + 4), e_test, mask_test, alpha_bar, m_x, m_e, ts, m_base
    )
    # baseline: the prior x_T (independent edges with the training marginal)
    baseline = spectre_data.from_dense(
        *Dg.marginal_baseline(jax.random.key(args.seed + 3), counts, n_max, m_base)
    )
    res = {
        "digress": gen_metrics.evaluate(generated, train, test, "planar"),
        **extra,
        "edge_diagnostic": diag,
        "marginal_noise_baseline": gen_metrics.evaluate(baseline, train, test, "planar"),
        "test_set_reference": gen_metrics.evaluate(test, train, test, "planar"),
        "mean_edges": {
            "digress": float(np.mean([g.number_of_edges() for g in generated])),
            "baseline": float(np.mean([g.number_of_edges() for g in baseline])),
            "test": float(np.mean([g.number_of_edges() for g in test])),
        },
        "sanity": sanity,
        "config": {**vars(args), "steps_done": steps_done},
        "train_seconds": train_s,
        "sample_seconds": sample_s,
        "loss_log": log,
        "platform": platform.platform(),
        "command": "nice -n 19 .venv/bin/python bench/digress_planar.py " + " ".join(sys.argv[1:]),
    }
    out = ROOT / "bench" / "results"
    name = f"digress_planar{args.tag}"
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    rows = {"DiGress": generated, "test": test, "marginal baseline": baseline}
    png = gen_metrics.draw_graphs(rows, per_row=6, kind="planar")
    import matplotlib.pyplot as plt

    plt.imsave(out / f"{name}.png", png)
    write_md(res, name)


def write_md(res, name):
    """bench/results/<name>.md from the results dict ``res``."""
    out = ROOT / "bench" / "results"
    a, sanity = res["config"], res["sanity"]
    keys = ["validity", "uniqueness", "novelty", "vun", "mmd_degree", "mmd_clustering"]
    keys.append("mmd_spectral")
    lines = [
        f"# DiGress on regenerated SPECTRE planar graphs of {a['num_nodes']} nodes (tiny CPU run)",
        "",
        f"Sanity: planar validity of the training graphs {sanity['train_validity']:.2f}, of the "
        f"test graphs {sanity['test_validity']:.2f}; a denoiser that always predicts a training "
        f"graph G samples G {sanity['oracle_exact']} times out of {sanity['oracle_samples']} "
        f"(validity {sanity['oracle_validity']:.2f}).",
        "",
        f"`{res['command']}`: {a['steps_done']} steps of batch {a['batch']}, T = {a['T']}, "
        f"{a['layers']} layers, dx = {a['dx']}, {a.get('transition', 'marginal')} transitions; "
        f"{a['samples']} samples each; MMD^2 vs the 40 "
        "test graphs (Gaussian-TV kernel). The test set's own row is the floor (novelty vs "
        f"train). Pictures: `{name}.png` (rows: DiGress samples, test graphs, marginal "
        "baseline).",
        "",
        "| sampler | " + " | ".join(keys) + " | mean edges |",
        "|" + "---|" * (len(keys) + 2),
    ]
    for row_name, ekey in [
        ("digress", "digress"),
        ("marginal_noise_baseline", "baseline"),
        ("test_set_reference", "test"),
    ]:
        row = " | ".join(f"{res[row_name][k]:.4f}" for k in keys)
        lines.append(f"| {row_name} | {row} | {res['mean_edges'][ekey]:.1f} |")
    for row_name in [k for k in res if k.startswith("digress_sample_T")]:
        row = " | ".join(f"{res[row_name][k]:.4f}" for k in keys)
        lines.append(f"| {row_name} | {row} | {res[row_name]['mean_edges']:.1f} |")
    if "edge_diagnostic" in res:
        cols = ["noisy_pairs_per_graph", "wrong_pairs_per_graph", "pair_error", "exact_graphs"]
        cols += ["argmax_validity", "ce_model", "ce_pair_posterior"]
        lines += [
            "",
            "Edge diagnostic (test graphs noised to t, the denoiser's argmax clean graph):",
            "",
            "| t | " + " | ".join(cols) + " |",
            "|" + "---|" * (len(cols) + 1),
        ]
        for t, d in res["edge_diagnostic"].items():
            lines.append(f"| {t} | " + " | ".join(f"{d[c]:.4f}" for c in cols) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
