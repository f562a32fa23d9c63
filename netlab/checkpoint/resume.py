"""Resume from the newest checkpoint that this config can use, or say in one line why not.

- `survey` (read-only: JSON and Orbax tree metadata, no arrays) lists the complete steps, newest
  first, after comparing the newest readable one with the config's whole train state; a different
  task or tree is one `UserError` naming the differing keys.
- `restore_newest` restores the newest step that reads; newer ones that do not (truncated or
  missing files, or labelled with a step their state is not at) are moved aside to
  `ckpt/unreadable-<step>` with a one-line notice. If no step restores, nothing is moved (a reader
  bug must not look like corruption) and `UnreadableError` says so.
"""

import os

import jax
import orbax.checkpoint as ocp

from netlab import distributed
from netlab.checkpoint import compat
from netlab.checkpoint.faults import quiet_background_errors
from netlab.checkpoint.manager import _quiet_absl, _reader, _restore, steps
from netlab.errors import UserError

UNREADABLE = "unreadable-"


class UnreadableError(OSError):
    """A checkpoint (or every checkpoint) in a directory cannot be read."""


def _saved_summary(mngr, step) -> dict:
    """The same summary of a saved step, from Orbax's tree metadata (no array is read)."""
    with _quiet_absl():
        md = mngr.item_metadata(step)
    if md is None or md.get("params") is None or md.get("rest") is None:
        raise UnreadableError(f"step {step} has no readable params/rest metadata")
    return {**compat.summary(md["params"], ("params",)), **compat.summary(md["rest"])}


def _incompatible(directory, detail):
    weights = (
        ""
        if detail.startswith("a different model")
        else " (add --config.checkpoint.init_from=<old workdir> to start from its weights)"
    )
    return UserError(
        f"{directory} holds a checkpoint of {detail}; use a new --workdir{weights}, "
        "or the settings it was saved with"
    )


def survey(directory, task_name: str, abstract_state) -> list:
    """Complete steps in `directory`, newest first, after checking that this config can resume them.

    Reads only JSON and Orbax metadata. The newest step whose metadata is readable decides: a
    different task or state tree is a UserError naming the keys. Steps whose metadata cannot be
    read stay in the list (the restore moves them aside if an older one works).
    """
    found = steps(directory)
    if not found:
        return []
    ours = compat.state_summary(abstract_state)
    with _reader(os.path.abspath(directory), metadata=True) as mngr, _quiet_absl():
        for step in found:
            try:
                meta = dict(
                    mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                )
                saved = _saved_summary(mngr, step)
            except Exception:  # noqa: BLE001 - unreadable: look at the next one
                continue
            if meta.get("task") != task_name:
                raise _incompatible(
                    directory, f"a different model (task {meta.get('task')!r} vs {task_name!r})"
                )
            detail = compat.describe_difference(saved, ours)
            if detail:
                raise _incompatible(directory, detail)
            break
    return found


def check_compatible(directory, task_name: str, abstract_state) -> int | None:
    """Latest step in `directory` if this config can resume it (None if empty); UserError if not."""
    found = survey(directory, task_name, abstract_state)
    return found[0] if found else None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    text = text[0].split(" See full TensorStore")[0][:160] if text else ""
    return f"{type(exc).__name__}: {text}"


def restore_newest(directory, candidates, abstract_state, lead=True, notice=print):
    """(state, step) from the newest of `candidates` that restores; the newer ones that failed are
    moved aside to `unreadable-<step>` (by the lead process) with a one-line notice each."""
    directory = os.path.abspath(directory)
    failed = []
    quiet_background_errors()  # a failed read leaves Orbax coroutines that report at exit
    with _reader(directory) as mngr, _quiet_absl():
        for step in candidates:
            try:
                meta = dict(
                    mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                )
                if not meta:
                    raise UnreadableError("empty meta")
                state, ok, why = _restore(mngr, step, abstract_state), True, ""
                held = int(jax.device_get(state.step))
                if held != step:  # mislabelled by an older netlab: not resumable
                    raise UnreadableError(f"it holds the state of step {held}")
            except Exception as e:  # noqa: BLE001 - any read failure: try an older one
                state, ok, why = None, False, _first_line(e)
            if distributed.all_processes(ok):
                break
            failed.append((step, why or "unreadable on another process"))
        else:
            newest = failed[0]
            raise UnreadableError(
                f"no checkpoint in {directory} could be read (newest: step {newest[0]}, "
                f"{newest[1]}); move the damaged step folders away to start over, or resume from "
                "a copy"
            )
    for bad, why in failed:
        target = os.path.join(directory, f"{UNREADABLE}{bad}")
        if lead:
            suffix = 0
            while os.path.exists(target):
                suffix += 1
                target = os.path.join(directory, f"{UNREADABLE}{bad}.{suffix}")
            os.rename(os.path.join(directory, str(bad)), target)
        notice(
            f"checkpoint step {bad} in {directory} is unreadable ({why}); moved it to "
            f"{os.path.basename(target)}, resuming from step {step}"
        )
    return state, step
