"""DCM (Battiloro et al., ICLR 2024; netlab/graph/dcm.py): node classification with a GNN plus
cell-complex message passing over the graph's short cycles, on a geom-gcn (split ``data.split``)
or Planetoid split, with GCN's schedule (Adam 0.01, L2 5e-4, 200 epochs; 32 hidden, dropout 0.5).

    python -m netlab.main --config configs/graph/dcm.py:data=texas --workdir runs/dcm_texas
    python -m netlab.main --config configs/graph/dcm.py:data=cora --workdir runs/dcm_cora

Argument: data=texas|cornell|wisconsin|cora|citeseer and a preset (cpu | gpu | pod). The cycles
(length <= model.max_cycle_len = 4, at most model.max_cells of them) are enumerated once on the
host by ``dcm.short_cycles`` (numpy): Cora has 1,630 triangles and 4,664 4-cycles (6,294 cells,
under a second), CiteSeer 7,227 cells, Texas 290.
"""

from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASETS = ("texas", "cornell", "wisconsin", "cora", "citeseer")
VARIANTS = tuple(f"data={d}" for d in DATASETS)


def get_config(arg=None):
    a = common.parse_arg(arg, PRESETS, data="texas")
    if a.data not in DATASETS:
        raise ValueError(f"data={a.data!r}; choose one of {', '.join(DATASETS)}")
    planetoid = a.data in ("cora", "citeseer")
    model = dict(
        name="dcm",
        hidden=32,
        num_layers=2,
        max_cycle_len=4,
        max_cells=8192 if planetoid else 4096,
        dropout=0.5,
    )
    c = common.planetoid_node_config(a.preset, a.data, model)
    if not planetoid:
        c.data.row_normalize = False
    return c
