"""One wrapper around Orbax's CheckpointManager: async saves, resume, reshard, params-only init.

Layout: `<workdir>/ckpt/<step>/{params,rest,meta}`. `params` is its own item so another run can
take just the weights (`config.checkpoint.init_from`); `rest` holds step, optimizer state, model
state and EMA; `meta` is JSON naming the task and every parameter's shape. Paths are made absolute
(Orbax rejects relative ones, and only later, in its background thread). Restores take target
shardings, so a checkpoint written on one mesh loads on any other.

Safety (issue 12): a save never labels or replaces a step at or below the newest checkpoint, nor
a state with a step it is not at, so Orbax's retention (which keeps the `max_to_keep` highest
steps) can never delete a newer checkpoint than the one being written. A save that fails on the
storage is one `faults.SaveError` line; Orbax finalises a step only after all its files are
written, so the previous complete checkpoint stays and a rerun resumes from it. Resuming (what to
restore, compatibility, unreadable checkpoints) is `netlab.checkpoint.resume`.
"""

import contextlib
import logging
import os

import jax
import orbax.checkpoint as ocp

from netlab.checkpoint import compat
from netlab.checkpoint.faults import SaveError, quiet_background_errors, storage_reason
from netlab.errors import UserError

ITEMS = ("params", "rest", "meta")


def _registry():
    reg = ocp.handlers.DefaultCheckpointHandlerRegistry()
    reg.add("params", ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    reg.add("rest", ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    reg.add("meta", ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return reg


def _options(every=1, max_to_keep=None, async_save=True, read_only=False):
    # Periodic saves are decided by Checkpointer.save (0 = off); Orbax must not add its own
    # "initial save" or interval policy, so every save call it sees is forced.
    return ocp.CheckpointManagerOptions(
        should_save_fn=lambda step, last: False,
        max_to_keep=max_to_keep or None,
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
    )


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


def _reader(directory, metadata=False):
    """A read-only manager; `metadata=True` registers handlers so `item_metadata` can read the
    saved trees (restores go through the plain one)."""
    with _quiet_absl():
        if metadata:
            return ocp.CheckpointManager(
                directory, options=_options(read_only=True), handler_registry=_registry()
            )
        return ocp.CheckpointManager(directory, options=_options(read_only=True), item_names=ITEMS)


# --------------------------------------------------------------------------------------------------
# Reading.


def steps(directory) -> list:
    """Complete checkpoint steps in `directory`, newest first, without creating anything."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        return []
    with _reader(directory) as mngr, _quiet_absl():
        return sorted(mngr.all_steps(), reverse=True)


def latest_step(directory) -> int | None:
    found = steps(directory)
    return found[0] if found else None


def read_meta(directory, step=None) -> dict:
    directory = os.path.abspath(directory)
    with _reader(directory) as mngr, _quiet_absl():
        step = mngr.latest_step() if step is None else step
        out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])


def _restore(mngr, step, abstract_state):
    out = mngr.restore(
        int(step),
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            rest=ocp.args.StandardRestore(compat.rest_items(abstract_state)),
        ),
    )
    rest = out["rest"]
    state = abstract_state.replace(
        step=rest["step"],
        params=out["params"],
        opt_state=rest["opt_state"],
        model_state=rest["model_state"],
        ema=rest["ema"],
    )
    return jax.block_until_ready(state)


# --------------------------------------------------------------------------------------------------
# Writing.


class Checkpointer:
    def __init__(self, directory, every: int, max_to_keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.every = int(every)
        quiet_background_errors()
        self.mngr = ocp.CheckpointManager(
            self.directory, options=_options(every, max_to_keep, async_save), item_names=ITEMS
        )
        self.newest = self.mngr.latest_step()  # saved or being saved
        self.pending = None  # step of an async save not yet confirmed

    def latest_step(self):
        return self.newest

    def _complete(self):
        found = [s for s in self.mngr.all_steps() if s != self.pending]
        return max(found) if found else None

    def _fail(self, step, exc):
        reason = storage_reason(exc)
        if reason is None:
            return exc
        kept = self._complete()
        keep = (
            f"step {kept} is the newest complete checkpoint"
            if kept is not None
            else "no complete checkpoint exists yet"
        )
        return SaveError(
            f"could not write the checkpoint of step {step} in {self.directory}: "
            f"{reason}; {keep}; free space (or fix the permissions) and rerun the "
            "same command to resume"
        )

    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        """Save `state` as `step` when it is a multiple of `every` (or `force`); returns whether
        a save started. `step` must be the state's own step: never at or below the newest."""
        step = int(step)
        if not force and not (self.every and step % self.every == 0):
            return False
        if self.newest is not None and step <= self.newest:
            if step == self.newest:
                return False  # already saved (or being saved)
            raise RuntimeError(
                f"refusing to save step {step} below the newest checkpoint "
                f"{self.newest} in {self.directory}"
            )
        held = int(jax.device_get(state.step))
        if held != step:
            raise RuntimeError(f"refusing to label the state of step {held} as step {step}")
        self.wait()
        try:
            self.mngr.save(
                step,
                force=True,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(state.params),
                    rest=ocp.args.StandardSave(compat.rest_items(state)),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
        except Exception as e:
            raise self._fail(step, e) from None
        self.newest, self.pending = step, step
        return True

    def restore(self, step: int, abstract_state):
        """Restore onto the shardings carried by `abstract_state` (any mesh, any device count).

        `abstract_state` is a `netlab.train.state.TrainState` of ShapeDtypeStructs; the result is
        the same dataclass with arrays (built with `.replace`, so this module does not import
        `train`).
        """
        return _restore(self.mngr, step, abstract_state)

    def reached_preemption(self, step: int) -> bool:
        return self.mngr.reached_preemption(int(step))

    def wait(self):
        """Block until the pending async save is complete; SaveError if it failed."""
        try:
            self.mngr.wait_until_finished()
        except Exception as e:
            step, self.pending = self.pending, None
            raise self._fail(step, e) from None
        self.pending = None

    def close(self):
        try:
            self.wait()
        finally:
            self.mngr.close()


def restore_params(source, abstract_params):
    """Parameters only, from a workdir (its ckpt/) or a checkpoint directory, onto our shardings."""
    source = os.path.abspath(source)
    directory = (
        os.path.join(source, "ckpt") if os.path.isdir(os.path.join(source, "ckpt")) else source
    )
    step = latest_step(directory)
    if step is None:
        raise UserError(
            f"checkpoint.init_from={source!r} holds no checkpoint; point it at a "
            "workdir or its ckpt/ folder"
        )
    with _reader(directory, metadata=True) as mngr, _quiet_absl():
        md = mngr.item_metadata(step)
        saved = compat.summary(md["params"], ("params",)) if md and md.get("params") else None
    ours = compat.summary(abstract_params, ("params",))
    detail = compat.describe_difference(saved, ours) if saved is not None else None
    if detail:  # checked on the metadata: a failed restore leaves Orbax coroutines behind
        raise UserError(
            f"checkpoint.init_from={source!r}: its parameters do not fit this model "
            f"({detail.split(': ', 1)[1]})"
        )
    with _reader(directory) as mngr, _quiet_absl():
        try:
            out = mngr.restore(
                step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
            )
        except (ValueError, KeyError) as e:
            raise UserError(
                f"checkpoint.init_from={source!r}: its parameters do not fit this "
                f"model ({str(e).splitlines()[0][:160]})"
            ) from None
    return out["params"], step


def write_params(ckdir, params, meta: dict) -> str:
    """A params-only checkpoint: step 0 of ``ckdir`` with the ``params`` and ``meta`` items, the
    layout `restore_params` (``checkpoint.init_from``) reads. Used by the converters
    (`netlab.convert`) and weight soups (`netlab.tools.soup`)."""
    params = jax.tree.map(jax.numpy.asarray, params)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True)
    with ocp.CheckpointManager(ckdir, options=options, item_names=("params", "meta")) as mngr:
        mngr.save(
            0,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
            ),
        )
        mngr.wait_until_finished()
    return ckdir


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
    )
