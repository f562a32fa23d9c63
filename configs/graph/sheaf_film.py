"""Neural Sheaf Diffusion (Bodnar et al., NeurIPS 2022) on Film, geom-gcn split `data.split` (0-9).

    python -m netlab.main --config configs/graph/sheaf_film.py:cpu --workdir runs/sheaf_film
    # paper numbers: ../shared/reference/graph.md §7; all 10 splits: python bench/graph_reproduce_advanced.py --only sheaf
"""
from configs import common

PRESETS = ("cpu", "gpu", "pod")
DATASET = "film"


def get_config(arg=None):
    import importlib.util
    import pathlib
    spec = importlib.util.spec_from_file_location("sheaf_texas", pathlib.Path(__file__).with_name("sheaf_texas.py"))
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    preset = common.parse_preset(arg, PRESETS)
    return base.nsd_config(preset, DATASET)
