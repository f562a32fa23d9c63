"""The training loop: resume -> step -> log -> evaluate -> checkpoint, until done or preempted.

Precedence at start (big_vision's): a checkpoint in the workdir (resume) > `checkpoint.init_from`
(weights only) > random init. Data and keys are functions of (seed, step), so a resumed run is
bit-identical to one that never stopped. SIGTERM (or the multi-host preemption sync point) saves
the current step on every process and exits cleanly.
"""
import json
import os
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from netlab import configlib, distributed
from netlab.checkpoint import manager as ckptlib
from netlab.metrics.progress import Progress
from netlab.metrics.writers import MetricWriter
from netlab.errors import UserError
from netlab.train.trainer import Trainer


def _setup_compile_cache(cfg, workdir):
    where = cfg.train.compile_cache
    if where == "none":
        return
    path = where or os.path.join(os.path.dirname(workdir), ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class _Preemption:
    """SIGTERM in a single process sets a flag; with several processes JAX's preemption service
    catches it and the checkpoint manager's sync point makes every process stop at one step."""

    def __init__(self):
        self.flag = False
        self.single = jax.process_count() == 1
        if self.single:
            self.previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.flag = True

    def reached(self, ckpt, step):
        return self.flag if self.single else ckpt.reached_preemption(step)

    def restore(self):
        if self.single:
            signal.signal(signal.SIGTERM, self.previous)


def _scalars(metrics) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def run(cfg, workdir: str, devices=None) -> dict:
    """Train `cfg` in `workdir`; returns the last logged metrics and evaluation scalars."""
    workdir = os.path.abspath(workdir)
    distributed.initialize()
    lead = distributed.is_lead()
    _setup_compile_cache(cfg, workdir)
    trainer = Trainer(cfg, devices=devices)          # validates mesh, batch, optimizer, task
    ckdir = os.path.join(workdir, "ckpt")
    summary = trainer.param_summary()
    resume_step = ckptlib.check_compatible(ckdir, cfg.task, summary)
    if resume_step is None and cfg.checkpoint.init_from and not os.path.isdir(cfg.checkpoint.init_from):
        raise UserError(f"checkpoint.init_from={cfg.checkpoint.init_from!r} does not exist; "
                        "point it at a previous run's workdir")

    # Everything is valid: from here on the run writes into its workdir. Every process must have
    # looked at the workdir before the lead changes it (reading a checkpoint dir may sync processes).
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("netlab:validated")
    if lead:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(configlib.to_json(cfg))
        os.makedirs(ckdir, exist_ok=True)
    if jax.process_count() > 1:
        # Orbax syncs processes only when it has to create the directory itself, so a process that
        # already sees it skips a barrier the others wait in; create it first, then meet once.
        multihost_utils.sync_global_devices("netlab:workdir_ready")
    writer = MetricWriter(workdir, lead)
    ckpt = ckptlib.Checkpointer(ckdir, cfg.checkpoint.every, cfg.checkpoint.max_to_keep, cfg.checkpoint.async_save)
    meta = {"task": cfg.task, "params": summary}
    total = trainer.total_steps
    progress = Progress(0, total, lead and cfg.train.progress, lead)

    if resume_step is not None:
        state = ckpt.restore(resume_step, trainer.abstract_state)
        progress.write(f"resumed from {ckdir} at step {resume_step}")
    else:
        state = trainer.init_state()
        if cfg.checkpoint.init_from:
            params, src_step = ckptlib.restore_params(cfg.checkpoint.init_from, trainer.abstract_state.params)
            state = state.replace(params=params)
            progress.write(f"initialised parameters from {cfg.checkpoint.init_from} (step {src_step})")
    start = int(jax.device_get(state.step))
    progress.bar.n = progress.last_step = start
    progress.write(f"{cfg.task}: {trainer.num_params():,} parameters on mesh {dict(trainer.mesh.shape)} "
                   f"x {jax.process_count()} process(es); steps {start}->{total}; workdir {workdir}")

    preemption = _Preemption()
    result = {"preempted": False, "metrics": {}, "eval": {}, "lead": lead}
    log_every, eval_every = max(cfg.train.log_every, 1), cfg.train.eval_every
    prof_start, prof_end = cfg.train.profile_start, cfg.train.profile_start + cfg.train.profile_steps
    t_log, n_log = time.perf_counter(), start
    step = start
    try:
        while step < total:
            if step == prof_start and lead:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
            batch = trainer.global_batch(step)
            state, metrics = trainer.train_step(state, batch)
            step += 1
            if step == prof_end and lead and prof_start >= 0:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
            if step % log_every == 0 or step == total:
                scalars = _scalars(metrics)
                now = time.perf_counter()
                scalars["steps_per_sec"] = (step - n_log) / max(now - t_log, 1e-9)
                if trainer.task.global_batch_size():
                    scalars["examples_per_sec"] = scalars["steps_per_sec"] * trainer.task.global_batch_size()
                t_log, n_log = now, step
                bad = writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
                progress.update(step, {"loss": scalars["loss"], "steps/s": scalars["steps_per_sec"]})
                result["metrics"] = scalars
                if bad:
                    raise FloatingPointError(f"non-finite training metrics at step {step}: {', '.join(bad)}; "
                                             "lower optimizer.lr or set optimizer.clip_norm")
            if eval_every and step % eval_every == 0 and step != total:
                result["eval"] = _evaluate(trainer, state, workdir, writer, progress, step)
            saved = ckpt.save(step, state, meta)      # Orbax also saves at a preemption sync point
            if preemption.reached(ckpt, step):
                if not saved:
                    ckpt.save(step, state, meta, force=True)
                ckpt.wait()
                progress.write(f"preempted: saved step {step} in {ckdir}; rerun the same command to resume")
                result["preempted"] = True
                return result
        if ckpt.latest_step() != total:
            ckpt.save(total, state, meta, force=True)
        result["eval"] = _evaluate(trainer, state, workdir, writer, progress, total)
        result["state"] = state
        return result
    finally:
        preemption.restore()
        ckpt.close()
        progress.close()
        writer.close()


def _evaluate(trainer, state, workdir, writer, progress, step):
    scalars, images = trainer.evaluate(state, workdir)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    writer.write_images(step, images)
    progress.write(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return scalars
