"""Defaults shared by every experiment config: trainer, optimizer, mesh, sharding, checkpoints.

A config file does::

    from configs import common
    PRESETS = ("cpu", "gpu", "pod")
    def get_config(arg=None):
        preset = common.parse_preset(arg, PRESETS)
        c = common.base_config()
        c.task = "netlab.<family>.task:<TaskClass>"
        c.model = ml_collections.ConfigDict(dict(...))
        ...
        return c
"""

import ml_collections

# Logical axis name -> mesh axes. The first matching rule wins (flax semantics); a name mapped to
# None stays replicated. Batch rows are spread over every data-like axis, expert axis included:
# outside MoE layers the expert axis is data parallelism.
DEFAULT_RULES = (
    ("layers", "stage"),  # stacked blocks of a pipeline (netlab/sharding/pipeline.py)
    ("batch", ("data", "fsdp", "expert")),
    (
        "expert_group",
        ("data", "fsdp"),
    ),  # MoE buffers (G, E, C, d): moving E onto 'expert' = all-to-all
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("expert", "expert"),
    ("embed_no_exp", "fsdp"),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("norm", None),
    ("length", None),
    ("nodes", None),
    ("edges", ("data", "fsdp", "expert")),
)


def parse_preset(arg, presets, default="cpu"):
    """The text after ':' in `--config file.py:arg`; one of `presets`, or empty for the default."""
    preset = (arg or default).strip()
    if preset not in presets:
        raise ValueError(
            f"unknown preset {preset!r}; choose one of {', '.join(presets)} (e.g. file.py:{presets[0]})"  # noqa: E501
        )
    return preset


def parse_arg(arg, presets=("cpu", "gpu", "pod"), **defaults):
    """big_vision-style variant argument: "model=gat,data=citeseer,gpu" -> ConfigDict.

    `defaults` names every accepted field with its default value (the type is taken from it); a
    bare word is the preset (one of `presets`, default the first). Unknown fields and bad presets
    raise ValueError, which the loader turns into a one-line error naming the choices.
    """
    out = ml_collections.ConfigDict(dict(defaults, preset=presets[0]))
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, sep, value = token.partition("=")
        if not sep:
            if key not in presets:
                raise ValueError(f"unknown preset {key!r}; choose one of {', '.join(presets)}")
            out.preset = key
            continue
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; choose from {', '.join(defaults)}")
        old = defaults[key]
        try:
            out[key] = (
                type(old)(value) if not isinstance(old, bool) else value.lower() in ("1", "true")
            )
        except ValueError:
            raise ValueError(
                f"config argument {key}={value!r}: expected {type(old).__name__}"
            ) from None
    return out


def base_config():
    c = ml_collections.ConfigDict()
    c.task = ""  # "package.module:TaskClass", imported lazily by the trainer
    c.seed = 0  # 0 .. 2**32 - 1 (train.validate checks every range below)
    c.model = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict(
        dict(
            steps=1000,  # >= 1, and >= the step of the workdir's newest checkpoint
            batch_size=64,  # global batch (rows of the `batch` axis); 0: full batch
            grad_accum=1,  # micro-batches per optimizer step
            log_every=50,  # 0: log the last step only
            eval_every=500,  # 0: evaluate only at the end
            compute_dtype="float32",  # float32 | bfloat16 (parameters stay float32)
            remat="none",  # none | full | dots | dots_no_batch | offload (netlab/nn/precision.py)
            profile_start=-1,  # first step of a profiler trace (-1: no trace)
            profile_steps=5,
            compile_cache="",  # "" -> <workdir parent>/.jax_cache ; "none" disables
            progress=True,  # tqdm progress bar on the lead process
        )
    )
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",  # adamw | adam | adamax | sgd | lion | adamp | sgdp
            lr=1e-3,
            schedule="cosine",  # cosine | linear | constant (after warmup)
            warmup_steps=0,
            end_lr_factor=0.0,  # final lr / peak lr for cosine and linear decay
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            amsgrad=False,  # adam, adamw: AMSGrad's running max of the second moment
            momentum=0.9,  # sgd, sgdp
            delta=0.1,  # adamp, sgdp: cosine threshold of the scale-invariance test (Heo et al.)
            wd_ratio=0.1,  # adamp, sgdp: weight-decay factor on projected (scale-invariant) weights
            weight_decay=0.0,
            wd_mask="matrices",  # matrices (ndim >= 2 only) | all | none
            clip_norm=0.0,  # 0: no clipping
            binaryconnect="none",  # none | deterministic | stochastic: binary weights (Courbariaux)
            hesso_sparsity=0.0,  # HESSO pruning: fraction of output units zeroed (0: off)
            hesso_warmup=0,  # HESSO: steps of the plain optimizer first
            hesso_periods=5,  # HESSO: pruning periods, each adds 1/periods of the target
            hesso_period_length=20,  # HESSO: steps per period (a redundant unit decays to 0)
            # DP-SGD (netlab/train/dpsgd.py): per-example clipping to dp_clip_norm (0: off), noise
            # dp_noise * dp_clip_norm on the sum; the (eps, dp_delta) budget is logged at start
            dp_clip_norm=0.0,
            dp_noise=1.0,
            dp_delta=1e-5,
            dp_dataset_size=0,  # 0: the task's num_train_examples
            ema_decay=0.0,  # fixed-decay EMA of params (0: off)
            ema_stds=(),  # EDM2 power-function EMAs, by relative std (e.g. (0.05, 0.1))
        )
    )
    c.mesh = ml_collections.ConfigDict(dict(island=1, stage=1, data=-1, fsdp=1, expert=1, tensor=1))
    # Islands (netlab/train/islands.py): mesh.island = K replicas that train alone and
    # synchronise every sync_every = H steps with DiLoCo's outer optimizer (Douillard et al.
    # 2023); qsr_alpha > 0 grows H as the lr decays (QSR, Gu et al. 2024). sync_every 0: off.
    c.islands = ml_collections.ConfigDict(
        dict(sync_every=0, outer_lr=0.7, outer_momentum=0.9, nesterov=True, qsr_alpha=0.0)
    )
    c.sharding = ml_collections.ConfigDict(
        dict(
            rules=DEFAULT_RULES,
            fsdp_min_bytes=4 * 2**20,  # unannotated leaves above this are sharded over fsdp
        )
    )
    c.checkpoint = ml_collections.ConfigDict(
        dict(
            every=500,  # 0: save only at the end and when stopped (SIGTERM/SIGINT)
            max_to_keep=2,  # 0: keep all
            async_save=True,
            init_from="",  # workdir or checkpoint dir to take params from (not opt state)
        )
    )
    return c


def planetoid_node_config(preset: str, data: str, model: dict):
    """Full-batch node classification on a Planetoid public split with GCN's schedule (Adam 0.01,
    L2 5e-4 on all parameters, 200 epochs): the shared part of the graph configs whose models the
    papers did not tune on Planetoid (configs/graph/laser.py, pathnn.py). ``pod`` splits the edge
    arrays over all devices."""
    c = base_config()
    c.task = "graph.node_classification"
    c.model = ml_collections.ConfigDict(model)
    c.data = ml_collections.ConfigDict(
        dict(
            name=data,
            data_dir="",
            split=0,
            row_normalize=True,
            edge_sharded=preset == "pod",
            precompute=True,
        )
    )
    c.loss = ml_collections.ConfigDict(dict(weight_decay=5e-4, weight_decay_scope=""))
    c.train.steps = 200
    c.train.batch_size = 0
    c.train.log_every = 20
    c.train.eval_every = 40
    c.checkpoint.every = 200
    c.optimizer.name = "adam"
    c.optimizer.lr = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.mesh.data = -1
    return c
