"""The training loop: check -> lock -> resume -> step -> log -> evaluate -> checkpoint.

Precedence at start (big_vision's): a checkpoint in the workdir (resume) > `checkpoint.init_from`
(weights only) > random init. Data and keys are functions of (seed, step), so a resumed run is
bit-identical to one that never stopped.

Everything that can refuse a run happens before the run writes anything (issue 12):
1. the config's common groups and the workdir path are range-checked (`netlab.train.validate`);
2. the Trainer is built (mesh, batch, optimizer, task);
3. the checkpoints are surveyed read-only: the saved train state must fit this config's, and
   `train.steps` must not be below the newest step;
4. the lead process takes the workdir lock (`netlab.train.workdir`), for all processes;
5. the newest readable checkpoint is restored (unreadable newer ones are moved aside);
only then are config.json, metrics and TensorBoard files written.

SIGINT and SIGTERM (`netlab.train.signals`) stop the loop after the current step, which is saved;
with several processes JAX's preemption sync point makes every process stop at one step.
"""

import json
import os
import signal
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from netlab import distributed
from netlab.checkpoint import manager as ckptlib
from netlab.checkpoint import resume
from netlab.errors import UserError
from netlab.metrics.progress import Progress
from netlab.metrics.writers import MetricWriter, read_jsonl
from netlab.train import signals, validate
from netlab.train.trainer import Trainer
from netlab.train.workdir import WorkdirLock

# JAX's own variable for the smallest compile time worth caching (JAX's default: 1 s). Unset, netlab
# caches programs that took 0.5 s or more; the test suite sets 0 for its CLI subprocesses, whose
# ~20 small programs each compile in less but add up to more CPU than the tiny runs themselves.
MIN_COMPILE_SECS_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def _setup_compile_cache(cfg, workdir):
    where = cfg.train.compile_cache
    if where == "none":
        return
    path = where or os.path.join(os.path.dirname(workdir), ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", path)
    if MIN_COMPILE_SECS_ENV not in os.environ:  # else JAX read it when it was imported
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _scalars(metrics) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _sync(name):
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _write_atomic(path, text):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def _config_json(cfg) -> str:
    """The config as configlib.to_json writes it (not imported: configlib imports the trainer)."""
    return json.dumps(json.loads(cfg.to_json()), indent=2, sort_keys=True)


def _take_lock(workdir, lead, say):
    """The lead takes the workdir lock; every process learns whether it did."""
    lock, error = None, None
    if lead:
        try:
            lock = WorkdirLock(workdir).acquire(say)
        except UserError as e:
            error = e
    if not distributed.all_processes(error is None):
        if lock is not None:
            lock.release()
        raise error or UserError(f"{workdir} is in use by another run (see process 0's message)")
    return lock


def run(cfg, workdir: str, devices=None) -> dict:
    """Train `cfg` in `workdir`; returns the last logged metrics and evaluation scalars.

    `result["stopped"]` is the signal number that stopped the run early (its step is saved), or
    None when it ran to `train.steps`.
    """
    stop = signals.STOP
    installed = stop.install()  # the CLI installs them earlier, before its imports
    if installed:
        stop.reset()
    try:
        return _run(cfg, workdir, devices, stop)
    finally:
        if installed:
            stop.uninstall()


def _run(cfg, workdir, devices, stop):
    workdir = validate.workdir(workdir)
    validate.config(cfg)
    distributed.initialize()
    stop.forward_to_jax = jax.process_count() > 1
    lead = distributed.is_lead()

    def say(text):
        if lead:
            print(text, file=sys.stderr)

    stop.check()
    _setup_compile_cache(cfg, workdir)
    trainer = Trainer(cfg, devices=devices)  # validates mesh, batch, optimizer, task
    stop.check()
    ckdir = os.path.join(workdir, "ckpt")
    total = trainer.total_steps
    candidates = resume.survey(ckdir, cfg.task, trainer.abstract_state)
    if candidates and candidates[0] > total:
        raise UserError(
            f"train.steps={total} is below step {candidates[0]} of the checkpoint in "
            f"{ckdir}; set --config.train.steps={candidates[0]} or more to continue "
            "that run, or use a new --workdir"
        )
    init_from = cfg.checkpoint.init_from
    if not candidates and init_from and not os.path.isdir(init_from):
        raise UserError(
            f"checkpoint.init_from={init_from!r} does not exist; point it at a "
            "previous run's workdir"
        )
    # Every process has looked at the workdir before the lead changes it.
    _sync("netlab:validated")
    lock = _take_lock(workdir, lead, say)
    try:
        return _resume_and_train(cfg, workdir, trainer, candidates, lead, say, stop)
    finally:
        if lock is not None:
            lock.release()


def _resume_and_train(cfg, workdir, trainer, candidates, lead, say, stop):
    ckdir = os.path.join(workdir, "ckpt")
    if candidates:
        state, start = resume.restore_newest(ckdir, candidates, trainer.abstract_state, lead, say)
        say(f"resumed from {ckdir} at step {start}")
    else:
        state, start = trainer.init_state(), 0
        if cfg.checkpoint.init_from:
            params, src_step = ckptlib.restore_params(
                cfg.checkpoint.init_from, trainer.abstract_state.params
            )
            state = trainer.with_params(state, params)
            say(f"initialised parameters from {cfg.checkpoint.init_from} (step {src_step})")
    stop.check()

    # Every check passed: from here on the run writes into its workdir.
    if lead:
        os.makedirs(ckdir, exist_ok=True)
        _write_atomic(os.path.join(workdir, "config.json"), _config_json(cfg))
    # Orbax syncs processes only when it has to create the directory itself, so a process that
    # already sees it skips a barrier the others wait in; create it first, then meet once.
    _sync("netlab:workdir_ready")
    writer = MetricWriter(workdir, lead, resume_step=start)
    c = cfg.checkpoint
    ckpt = progress = None
    finished = False
    try:
        ckpt = ckptlib.Checkpointer(ckdir, c.every, c.max_to_keep, c.async_save)
        progress = Progress(start, trainer.total_steps, lead and cfg.train.progress, lead)
        progress.write(
            f"{cfg.task}: {trainer.num_params():,} parameters on mesh "
            f"{dict(trainer.mesh.shape)} x {jax.process_count()} process(es); steps "
            f"{start}->{trainer.total_steps}; workdir {workdir}"
        )
        result = _train(cfg, workdir, trainer, state, start, ckpt, writer, progress, stop)
        finished = True
        return result
    finally:
        first = None
        for closer in (ckpt, progress, writer):
            try:
                if closer is not None:
                    closer.close()
            except Exception as e:  # noqa: BLE001 - report the first, close all
                first = first or e
        if first is not None and finished:
            raise first


def _train(cfg, workdir, trainer, state, start, ckpt, writer, progress, stop):
    ckdir, total = ckpt.directory, trainer.total_steps
    meta = {"task": cfg.task, "params": trainer.param_summary()}
    lead = progress.lead
    multi = jax.process_count() > 1
    result = {"stopped": None, "preempted": False, "metrics": {}, "eval": {}, "lead": lead}
    log_every, eval_every = cfg.train.log_every, cfg.train.eval_every
    prof_start = cfg.train.profile_start
    prof_end = prof_start + cfg.train.profile_steps
    t_log, n_log = time.perf_counter(), start
    step = start
    stop.check()
    if start and start >= total:  # a finished run, rerun: report its evaluation, do not redo it
        result["eval"] = _logged_eval(workdir, total)
        progress.write(
            f"already finished at step {total} (checkpoint in {ckdir}); raise "
            "--config.train.steps to train on"
        )
        return result
    while step < total:
        if step == prof_start and lead:
            jax.profiler.start_trace(os.path.join(workdir, "profile"))
        batch = trainer.global_batch(step)
        state, metrics = trainer.train_step(state, batch, step)
        step += 1
        if step == prof_end and lead and prof_start >= 0:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
        if (log_every and step % log_every == 0) or step == total:
            scalars = _scalars(metrics)
            now = time.perf_counter()
            scalars["steps_per_sec"] = (step - n_log) / max(now - t_log, 1e-9)
            gbs = trainer.task.global_batch_size()
            if gbs:
                scalars["examples_per_sec"] = scalars["steps_per_sec"] * gbs
            t_log, n_log = now, step
            bad = writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
            progress.update(step, {"loss": scalars["loss"], "steps/s": scalars["steps_per_sec"]})
            result["metrics"] = scalars
            if bad:
                raise FloatingPointError(
                    f"non-finite training metrics at step {step}: {', '.join(bad)}; lower "
                    "optimizer.lr or set optimizer.clip_norm"
                )
        if eval_every and step % eval_every == 0 and step != total:
            result["eval"] = _evaluate(trainer, state, workdir, writer, progress, step)
        ckpt.save(step, state, meta)
        if ckpt.reached_preemption(step) if multi else stop.requested:
            ckpt.save(step, state, meta, force=True)  # a no-op if this step is saved
            ckpt.wait()
            how = "interrupted" if stop.exit_code else "preempted"
            progress.write(f"{how}: saved step {step} in {ckdir}; rerun the same command to resume")
            result["stopped"] = stop.signum or signal.SIGTERM
            result["preempted"] = True
            return result
    ckpt.save(step, state, meta, force=True)  # a no-op if this step is saved
    result["eval"] = _evaluate(trainer, state, workdir, writer, progress, step)
    result["state"] = state
    return result


def _logged_eval(workdir, step) -> dict:
    """The `eval/` scalars metrics.jsonl holds for `step` (empty if none were logged)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    for rec in read_jsonl(path):
        if rec.get("step") == step:
            out.update({k[5:]: v for k, v in rec.items() if k.startswith("eval/")})
    return out


def _evaluate(trainer, state, workdir, writer, progress, step):
    scalars, images = trainer.evaluate(state, workdir)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    writer.write_images(step, images)
    progress.write(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return scalars
