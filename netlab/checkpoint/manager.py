"""One wrapper around Orbax's CheckpointManager: async saves, resume, reshard, params-only init.

Layout: `<workdir>/ckpt/<step>/{params,rest,meta}`. `params` is its own item so another run can
take just the weights (`config.checkpoint.init_from`); `rest` holds step, optimizer state, model
state and EMA; `meta` is JSON naming the task and every parameter's shape, so resuming a workdir
that holds another model fails with a clear error instead of a shape mismatch deep in Orbax.
Paths are made absolute (Orbax rejects relative ones, and only later, in its background thread).
Restores take target shardings, so a checkpoint written on one mesh loads on any other.
"""
import contextlib
import logging
import os

import jax
import orbax.checkpoint as ocp

from netlab.errors import UserError

ITEMS = ("params", "rest", "meta")


def _rest(state) -> dict:
    return {"step": state.step, "opt_state": state.opt_state, "model_state": state.model_state, "ema": state.ema}


def _options(every=1, max_to_keep=None, async_save=True, read_only=False):
    return ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(every), 1), max_to_keep=max_to_keep or None,
        enable_async_checkpointing=async_save, read_only=read_only, create=not read_only,
        cleanup_tmp_directories=not read_only)


@contextlib.contextmanager
def _quiet_absl():
    """Read-only managers warn that the directory is read only: expected here, so silence it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reader(directory):
    with _quiet_absl():
        return ocp.CheckpointManager(directory, options=_options(read_only=True), item_names=ITEMS)


def latest_step(directory) -> int | None:
    """Latest complete checkpoint step in `directory`, without creating anything."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        return None
    with _reader(directory) as mngr, _quiet_absl():
        return mngr.latest_step()


def read_meta(directory, step=None) -> dict:
    directory = os.path.abspath(directory)
    with _reader(directory) as mngr, _quiet_absl():
        step = mngr.latest_step() if step is None else step
        out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])


def check_compatible(directory, task_name: str, param_summary: dict) -> int | None:
    """Latest step of a checkpoint in `directory` that this model can resume from; error otherwise."""
    step = latest_step(directory)
    if step is None:
        return None
    meta = read_meta(directory, step)
    if meta.get("task") != task_name or meta.get("params") != param_summary:
        saved, ours = meta.get("params", {}), param_summary
        first = next((k for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)), None)
        detail = f"task {meta.get('task')!r} vs {task_name!r}" if meta.get("task") != task_name else \
            f"parameter {first}: saved {saved.get(first)} vs config {ours.get(first)}"
        raise UserError(f"{directory} holds a checkpoint of a different model ({detail}); "
                        f"use a new --workdir, or delete that checkpoint to start over")
    return step


class Checkpointer:
    def __init__(self, directory, every: int, max_to_keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.mngr = ocp.CheckpointManager(
            self.directory, options=_options(every, max_to_keep, async_save), item_names=ITEMS)

    def latest_step(self):
        return self.mngr.latest_step()

    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        return self.mngr.save(int(step), force=force, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            rest=ocp.args.StandardSave(_rest(state)),
            meta=ocp.args.JsonSave(meta)))

    def restore(self, step: int, abstract_state):
        """Restore onto the shardings carried by `abstract_state` (any mesh, any device count).

        `abstract_state` is a `netlab.train.state.TrainState` of ShapeDtypeStructs; the result is the
        same dataclass with arrays (built with `.replace`, so this module does not import `train`).
        """
        out = self.mngr.restore(int(step), args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            rest=ocp.args.StandardRestore(_rest(abstract_state))))
        rest = out["rest"]
        return abstract_state.replace(step=rest["step"], params=out["params"], opt_state=rest["opt_state"],
                                      model_state=rest["model_state"], ema=rest["ema"])

    def reached_preemption(self, step: int) -> bool:
        return self.mngr.reached_preemption(int(step))

    def wait(self):
        self.mngr.wait_until_finished()

    def close(self):
        self.mngr.wait_until_finished()
        self.mngr.close()


def restore_params(source, abstract_params):
    """Parameters only, from a workdir (its ckpt/) or a checkpoint directory, onto our shardings."""
    source = os.path.abspath(source)
    directory = os.path.join(source, "ckpt") if os.path.isdir(os.path.join(source, "ckpt")) else source
    step = latest_step(directory)
    if step is None:
        raise UserError(f"checkpoint.init_from={source!r} holds no checkpoint; point it at a workdir or its ckpt/ folder")
    with _reader(directory) as mngr, _quiet_absl():
        try:
            out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
        except (ValueError, KeyError) as e:
            raise UserError(f"checkpoint.init_from={source!r}: its parameters do not fit this model "
                            f"({str(e).splitlines()[0][:160]})") from None
    return out["params"], step


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)
