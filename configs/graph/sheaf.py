"""Neural Sheaf Diffusion (Bodnar et al., NeurIPS 2022) on the heterophilic geom-gcn sets Texas,
Wisconsin, Cornell and Film, split `data.split` (0-9).

    python -m netlab.main --config configs/graph/sheaf.py:data=texas --workdir runs/sheaf_texas
    python -m netlab.main --config configs/graph/sheaf.py:data=film,maps=orth \
        --workdir runs/sheaf_film_orth --config.data.split=3
    # paper (10 splits) on Texas: Diag 85.67±6.95, O(d) 85.95±5.51, Gen 82.97±5.13; other sets:
    # bench/graph_reproduce_advanced.py (NSD_PAPER). All 10 splits with early stopping:
    # python bench/graph_reproduce_advanced.py --only sheaf

Argument: data=texas|wisconsin|cornell|film, maps=diag|orth|general (the restriction maps, i.e.
Diag-NSD, O(d)-NSD, Gen-NSD) and a preset (cpu | gpu | pod; the same settings on every device).
Texas, Wisconsin, Cornell: 4 layers, d=3, 16 channels, dropout 0.5, L2 5e-3, Adam 0.02.
Film: defaults chosen on mean validation accuracy of Diag-NSD over splits 0-2 (10 settings, early
stopping with patience 50; selected on validation only): 2 layers, d=3, 16 channels, dropout 0.7,
input dropout 0.5, L2 5e-3, Adam lr 0.01 -> val 37.94, against 36.79 for the earlier bench setting
(dropout 0.5, no input dropout, L2 5e-4). 10 splits: 35.72 +- 0.78 (paper 37.79 +- 1.01).
Searched on splits 0-2 around it (val 37.0-38.2, test 34.5-36.4, every row in
bench/results/graph_reproduce_advanced_nsd_film.md): stalk d 4 and 5, 4 and 6 layers, 32 and 64
channels, and the authors' code defaults one at a time and together (maps relearned every layer,
`model.nonlinear`; row-normalised features, `data.row_normalize`; identity left weights; torch's
Linear init, `model.weight_init=torch`; 1500 epochs with val-loss early stopping, patience 200).
None raises validation accuracy; d = 4 has the best test mean, 36.15 +- 0.83 on 10 splits (val
37.74, below this default's).

Why the 1.6-2 point gap remains (bench/results/graph_reproduce_advanced_nsd_film.md):
- the model is the authors': with every weight random, Diag-NSD's forward equals a float64
  transcription of their DiscreteDiagSheafDiffusion.forward to 1e-10 (tests/graph/test_sheaf.py);
- the data and protocol reproduce the published baseline: the MLP (this encoder and decoder with
  num_layers=0, this default's regularisation) scores 35.97 +- 0.92 on the 10 splits, against the
  MLP row of NSD's Table 1, 36.53 +- 0.70 (recalled), and 35.76 in H2GCN's table (recalled);
- the diffusion layers move the test mean by -0.3 to +0.3 points from that MLP here (35.72 to
  36.26), against the paper's +1.3 over its MLP row. A random
  sample (17 settings, 3 splits) of the authors' own sweep distributions (their
  config/orth_webkb_sweep.yml: d 2-4, lp/hp, 2-6 layers, 8-32 channels, L2 1e-4-1e-3, sheaf L2
  1.7e-5-1e-3, dropouts 0-0.9; plus second_linear, lr 0.01/0.02, maps relearned every layer,
  row-normalised features, torch init, identity left weights) gives val 35.6-38.1 (test tracks val,
  correlation 0.91); its best two on 10 splits: 36.09 +- 1.26 (d 2, 8 channels, 3 layers, lp)
  and 36.26 +- 1.23 (d 4, 16 channels, 4 layers), the same as d = 4 above.
So the gap is most likely the paper's own Film sweep (its winning setting is not published; the
repository has scripts for other sets only), not a difference in the model, data or evaluation.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASETS = ("texas", "wisconsin", "cornell", "film")
MAPS = ("diag", "orth", "general")
VARIANTS = tuple(f"data={d}" for d in DATASETS) + (
    "data=texas,maps=orth",
    "data=texas,maps=general",
)

# Per dataset: model fields that differ from the defaults below, and the Adam learning rate.
TABLE = {
    "texas": dict(model={}, lr=0.02),
    "wisconsin": dict(model={}, lr=0.02),
    "cornell": dict(model={}, lr=0.02),
    "film": dict(model=dict(num_layers=2, dropout=0.7, input_dropout=0.5), lr=0.01),
}


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="texas", maps="diag")
    if a.data not in TABLE:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(TABLE)}")
    if a.maps not in MAPS:
        raise ValueError(f"maps={a.maps!r}; choose one of {', '.join(MAPS)}")
    hp = TABLE[a.data]
    c = common.base_config()
    c.task = "graph.continuous_node_classification"
    c.model = ml_collections.ConfigDict(
        dict(
            name="nsd",
            d=3,
            hidden_channels=16,
            num_layers=4,
            map_type=a.maps,
            orth_method="householder",
            nonlinear=False,
            input_dropout=0.0,
            dropout=0.5,
            add_lp=False,  # fixed extra stalk dimensions (netlab.graph.sheaf docstring)
            add_hp=False,
            left_weights=True,
            left_init="orthogonal",  # the authors' code: "identity"
            right_weights=True,
            use_epsilons=True,
            augmented=True,
            use_act=True,
            weight_init="lecun",  # lecun | torch (the authors' nn.Linear default: uniform, bias)
            second_linear=False,  # the authors' lin12: a second encoder layer
        )
    )
    c.model.update(hp["model"])
    c.data = ml_collections.ConfigDict(dict(name=a.data, data_dir="", split=0, row_normalize=False))
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-3, weight_decay_scope=""))
    # The authors' sheaf_decay: the sheaf learners' own L2 (None: the same as weight_decay).
    c.loss.weight_decay_overrides = ml_collections.ConfigDict(dict(sheaf_learner=None))
    c.train.steps = 300
    c.train.batch_size = 0
    c.train.log_every = 50
    c.train.eval_every = 100
    c.checkpoint.every = 300
    c.optimizer.name = "adam"
    c.optimizer.lr = hp["lr"]
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = -1  # full graph replicated on every device (identical gradients)
    return c
