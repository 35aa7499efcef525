"""`lfme tune`: a hyperparameter sweep of the distill stage over one run's teacher cache.

Why a sweep costs little here: the experts ran once and their logits are in
the teacher cache, so a trial is just a student training. The sweep therefore
reads the run's split, experts and cache as they are (running them first when
they are not done for this config) and only varies `distill.*` fields; it
refuses to start on a cache that does not match the current experts and checks
it again at the end, so no trial can have retrained an expert or rerun a
teacher unnoticed. Trials never import the experts or cache stage functions.

Layout under `<run_dir>/tune/<name>/`:
    config.yaml        the sweep's resolved config (what `--resume` continues)
    trials/<trial id>  Ray Tune's experiment: per-trial results, TensorBoard events,
                       a one-worker trial's epoch checkpoints
    train/             each several-worker trial's Ray Train run (its per-epoch checkpoints)
    trials.csv, trials.md, best_config.yaml, best_student.pt   the outcome (`pipeline.sweep_outcome`)
A trial's own per-epoch scalars (w_l per expert, mean v_i, the loss's parts)
go to `<run_dir>/tensorboard/tune/<name>/<trial id>`, beside the stages'.

Each trial is a function trainable that trains the student with the distill
stage's loop (`stages.distill.train_student`). A one-worker student (the
presets' sweeps) trains in the trial's own process, which holds the worker's
CPUs and GPU, and reports each epoch to Tune with its checkpoint
(`TrialCheckpoints`): no Ray Train run, whose start-up (a controller and five
helper actors) would cost each trial more than a short student's training.
A student of several workers is a Ray Train run of the stage's worker loop
(`stages.distill.distill_loop` through `stages.workers.fit`), each epoch's
report passed to Tune by `TuneReportCallback` (Ray 2.60 cannot tune a
TorchTrainer directly), named after the trial id. Either way a restored sweep
resumes each unfinished trial from its last epoch checkpoint, a failed trial
is retried from it (one worker: Tune retries it `distill.max_failures`
times, a diverged one too, which diverges again and ends in error; several:
Ray Train retries the workers), and one killed after its last epoch
reports that epoch again (`lfme.loop.run_epochs`), so its result is the final
one and its checkpoint one that exists.
The distill stage's own outputs (`distill/`, its manifest record, its
TensorBoard scalars) are not touched: the best configuration is written as a
YAML that `lfme run` accepts.

Known limits (Ray 2.60):
- a several-worker trial that ASHA stops early is killed with its Ray Train
  controller; its workers' placement group is then removed by Ray Train's
  PlacementGroupCleaner, which finds the cluster through the state API and
  fails ("Found multiple active Ray instances") when several local Ray
  clusters run on one machine. There the stopped trial's CPUs stay reserved
  until the sweep ends, and trials that need them wait;
- Tune copies its sweep state into `trials/` in place; here each file is
  moved into place instead (`stages.ray_compat.atomic_tune_uploads`; Ray
  Train's record of a run, written in place too, is rebuilt by
  `stages.workers.repair_record`). A sweep state damaged otherwise (an older
  version's sweep, a hand-edited file) stops `--resume` naming it
  (`check_sweep_state`);
- a sweep started before one-worker trials trained in their own process
  (2026-12-06) keeps its trials' old 0.01-CPU share when resumed, and its
  unfinished trials start over from epoch 1: start such a sweep anew.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from lfme import storage
from lfme.loop import LoopState, load_process_state, process_state_dict, report_metrics
from pipeline.graph import TEACHER_STAGES, fingerprints
from pipeline.driver import holding, resolved
from pipeline.lease import Lease
from pipeline.manifest import Manifest
from pipeline.ray_session import RaySession
from pipeline.runner import check_inputs, run_pipeline
from pipeline.sweep_outcome import write_outcome
from rundir.config import Config, dump_config, load_config, with_values
from rundir.fields import ConfigError
from rundir.layout import CONFIG_YAML, STATE_FILE, read_split, sweep_dir, verified_cache

# A several-worker trial's own actor only waits on its Ray Train run; the CPUs
# are the workers'. Tune refuses 0, so a token share.
TRIAL_CPU = 0.01
LOGGER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


class MissingPackageError(RuntimeError):
    """A logger named in `tune.loggers` needs a package that is not installed."""


def check_logger_packages(loggers: Sequence[str]) -> None:
    """Fail before any work when a configured logger cannot be built."""
    for logger in loggers:
        package = LOGGER_PACKAGES[logger]
        if importlib.util.find_spec(package) is None:
            raise MissingPackageError(
                f"tune.loggers: '{logger}' needs the Python package '{package}', which is not installed "
                f"(pip install {package}, or remove '{logger}' from tune.loggers)"
            )


def max_epochs(config: Config) -> int:
    """The most epochs any trial can run: ASHA's max_t."""
    spec = config.tune.specs().get("distill.epochs")
    return config.distill.epochs if spec is None else spec.largest


def param_space(config: Config) -> dict[str, Any]:
    from ray import tune

    space = {}
    for key, spec in config.tune.specs().items():
        space[key] = tune.choice(list(spec.values)) if spec.form == "choice" else getattr(tune, spec.form)(*spec.values)
    return space


def trial_concurrency(config: Config, log: Callable[[str], None]) -> int:
    """Trials at once: as many as the cluster fits distill worker groups, unless the config caps it."""
    import ray

    if config.tune.max_concurrent_trials is not None:
        return config.tune.max_concurrent_trials
    res = config.distill.resources
    cluster = ray.cluster_resources()
    workers_cpus = res.num_workers * res.cpus_per_worker if res.num_workers > 1 else 0.0  # beside the trial, in Ray Train
    fits = [cluster.get("CPU", 0.0) // (trial_resources(config)["CPU"] + workers_cpus)]
    if res.use_gpu:
        fits.append(cluster.get("GPU", 0.0) // (res.num_workers * res.gpus_per_worker))
    concurrency = max(1, int(min(fits)))
    log(f"tune: {concurrency} trial(s) at once ({res.num_workers} distill worker(s) each, cluster {cluster.get('CPU', 0):g} CPUs)")
    return concurrency


def logger_callbacks(config: Config, directory: str) -> list:
    """Tune's CSV and JSON result files (the results table is read from them) plus the configured loggers."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    callbacks = [CSVLoggerCallback(), JsonLoggerCallback()]
    if "tensorboard" in config.tune.loggers:
        callbacks.append(TBXLoggerCallback())
    if "mlflow" in config.tune.loggers:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri is None:
            local = storage.local_path(directory)
            if local is None:
                raise ConfigError(
                    "tune.loggers: mlflow with a run directory on remote storage needs MLFLOW_TRACKING_URI "
                    "(an MLflow server or a local folder); it cannot keep its files in the bucket"
                )
            tracking_uri = Path(local, "mlruns").as_uri()
        callbacks.append(MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=f"lfme-{config.tune.name}"))
    if "wandb" in config.tune.loggers:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "lfme"), group=config.tune.name))
    return callbacks


def run_trial(params: dict, base: Config, run_dir: str, expected: dict, train_storage: str) -> None:
    """One trial: the student with this trial's values, each epoch reported to Tune.

    One worker: the distill stage's loop in the trial's own process, its epoch
    checkpoints kept by Tune (`TrialCheckpoints`). Several: a Ray Train run of
    the stage's worker loop, named after the trial, whose reports
    `TuneReportCallback` passes on.
    """
    from ray import tune

    from stages.distill import distill_loop, train_alone

    config = with_values(base, params)
    trial = tune.get_context().get_trial_id()
    scalars_as = ("tune", f"{config.tune.name}/{trial}")  # not the distill stage's own scalars
    if config.distill.resources.num_workers == 1:
        train_alone(config, run_dir, expected, TrialCheckpoints(), scalars_as)
        return

    from ray.tune.integration.ray_train import TuneReportCallback

    from stages import workers

    workers.fit(
        distill_loop,
        {"config": config, "run_dir": run_dir, "expected": expected, "scalars_as": scalars_as},
        config.distill.resources,
        name=f"{config.tune.name}_{trial}",
        storage_path=train_storage,
        max_failures=config.distill.max_failures,
        callbacks=[TuneReportCallback()],
    )


class TrialCheckpoints:
    """A one-worker trial's epoch checkpoints (`lfme.loop.Checkpoints`), kept by Tune in the trial's folder.

    Each epoch is reported to Tune with a checkpoint of the whole training
    state (RNG included); a trial Tune restores (a resumed sweep, a retried
    failure) continues from the last one Tune recorded.
    """

    def restore(self, model, optimizer, scheduler) -> LoopState | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            saved = storage.load_torch(storage.join(directory, STATE_FILE))
        return load_process_state(saved, model, optimizer, scheduler)

    def save(self, state: LoopState, model, optimizer, scheduler) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory() as directory:  # Tune copies it into the trial's folder during the report
            storage.save_torch_atomic(storage.join(directory, STATE_FILE), process_state_dict(state, model, optimizer, scheduler))
            tune.report(report_metrics(state.history[-1]), checkpoint=tune.Checkpoint.from_directory(directory))


def trial_resources(config: Config) -> dict[str, float]:
    """What one trial holds: its one worker's share in its own process, or a token share beside its Ray Train workers."""
    res = config.distill.resources
    if res.num_workers > 1:
        return {"CPU": TRIAL_CPU}
    return {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.use_gpu else {})}


def trial_dirname(trial) -> str:
    """A trial's folder is its id: the id in trials.csv finds its TensorBoard events."""
    return trial.trial_id


def ensure_inputs(config: Config, run_dir: str, lease: Lease, ray: RaySession, log: Callable[[str], None]) -> dict[str, str]:
    """Run split, experts and cache where they are not done (or damaged) for this config; return the fingerprints."""
    fps = fingerprints(config)
    run_pipeline(config, run_dir, through=TEACHER_STAGES[-1], log=log, lease=lease, ray=ray)
    check_inputs(Manifest.load(run_dir), "distill", fps)
    return fps


def run_tune(
    config: Config,
    run_dir: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    lease: Lease | None = None,
    ray: RaySession | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep `config.tune` describes; write its tables and best config; return a summary.

    `lease`: the run directory's lease when the caller holds it already (the
    CLI takes it first); otherwise this call takes it and gives it back.
    `ray`: the caller's Ray session, which the caller closes; otherwise this
    call opens one and closes it.
    """
    config, run_dir = resolved(config, run_dir)
    config.run_dir = run_dir  # best_config.yaml then points `lfme run` at this run and its cache
    out = sweep_dir(run_dir, config.tune.name)
    if resume:
        if not storage.is_file(storage.join(out, CONFIG_YAML)):
            raise FileNotFoundError(f"--resume: no sweep '{config.tune.name}' in {storage.join(run_dir, 'tune')}")
        config = load_config(storage.join(out, CONFIG_YAML))  # a resumed sweep is the same sweep, whatever CONFIG says now
        log(f"tune: resuming the sweep in {out} with its own config.yaml")
    elif storage.exists(storage.join(out, "trials")):
        raise FileExistsError(
            f"{out} holds a sweep already: resume it with --resume, or start another with --set tune.name=NEW"
        )
    if not config.tune.search_space:
        raise ConfigError("tune.search_space: empty; name at least one distill.* key to sweep")
    epochs = max_epochs(config)
    if config.tune.grace_period > epochs:
        raise ConfigError(f"tune.grace_period: {config.tune.grace_period} is more than the most epochs a trial runs ({epochs})")
    check_logger_packages(config.tune.loggers)

    with holding(run_dir, config, log, lease, ray) as (lease, session):
        session.check_reachable()
        fps = ensure_inputs(config, run_dir, lease, session, log)
        session.wait_for(config, "tune")
        storage.write_text_atomic(storage.join(out, CONFIG_YAML), dump_config(config))
        subsets = read_split(run_dir).subsets
        expected = verified_cache(run_dir, fps["cache"], subsets)
        results = fit_sweep(config, run_dir, expected, resume, epochs, log)
        # The same check as before the sweep, on the files as they are now:
        # nothing retrained an expert or rewrote the cache while trials ran.
        if verified_cache(run_dir, fps["cache"], subsets) != expected:
            raise RuntimeError("the experts or the teacher cache changed during the sweep")
        return write_outcome(config, run_dir, results, log)


def fit_sweep(config: Config, run_dir: str, expected: dict, resume: bool, epochs: int, log: Callable[[str], None]):
    from ray import tune

    from stages import ray_compat

    out = sweep_dir(run_dir, config.tune.name)
    storage_filesystem, storage_path = storage.arrow_filesystem(out)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=config, run_dir=run_dir, expected=expected, train_storage=storage.join(out, "train")),
        lambda params: tune.PlacementGroupFactory([trial_resources(with_values(config, params))]),
    )
    if resume:
        check_sweep_state(storage.join(out, "trials"))
        tuner = tune.Tuner.restore(
            f"{storage_path}/trials",
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=storage_filesystem,
        )
    else:
        tcfg = config.tune
        log(f"tune: {tcfg.num_samples} trial(s) over {', '.join(tcfg.search_space)}; ASHA on {tcfg.metric}, up to {epochs} epochs")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=tune_config(config, epochs, log),
            run_config=tune.RunConfig(
                name="trials",
                storage_path=storage_path,
                storage_filesystem=storage_filesystem,
                callbacks=logger_callbacks(config, out),
                # A one-worker trial's checkpoints are Tune's. Tune saves the sweep's state after every num_to_keep
                # trial checkpoints (`sync_every_n_trial_checkpoints`): 3, not 2, saves less often at short epochs.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                # A failed one-worker trial resumes from its last checkpoint; a several-worker trial's Ray Train
                # run already retries its workers `distill.max_failures` times.
                failure_config=tune.FailureConfig(
                    max_failures=config.distill.max_failures if config.distill.resources.num_workers == 1 else 0
                ),
                verbose=1,
            ),
        )
    with ray_compat.only_configured_tune_loggers(), ray_compat.tune_leaves_sigint_alone(), ray_compat.atomic_tune_uploads():
        return tuner.fit()


# The files of Tune's sweep state that `Tuner.restore` reads, the newest of each (named by its driver's start),
# and how each is read: the experiment's state (JSON) and the search algorithm's (a cloudpickle, despite its name).
SWEEP_STATE = {"experiment_state-": "json", "basic-variant-state-": "pickle"}


def check_sweep_state(trials: str) -> None:
    """Refuse, naming the file, to resume from Tune's state of a sweep that a kill cut short (see Known limits)."""
    import ray.cloudpickle

    names = storage.list_names(trials)
    for prefix, form in SWEEP_STATE.items():
        states = [n for n in names if n.startswith(prefix) and n.endswith(".json")]
        if not states:
            continue  # `Tuner.restore` says what is missing
        newest = storage.join(trials, max(states))
        try:
            json.loads(storage.read_text(newest)) if form == "json" else ray.cloudpickle.loads(storage.read_bytes(newest))
        except (ValueError, EOFError, pickle.UnpicklingError):
            raise ValueError(
                f"{newest}: Tune's state of this sweep was cut short (a kill while Tune copied it into place), so the "
                "sweep cannot be resumed; start it again under another name (--set tune.name=NEW)"
            ) from None


def tune_config(config: Config, epochs: int, log: Callable[[str], None]):
    """ASHA on the reported epoch, trials drawn by a seeded generator, as many at once as fit (`trial_concurrency`)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    tcfg = config.tune
    return tune.TuneConfig(
        metric=tcfg.metric,
        mode="max",
        num_samples=tcfg.num_samples,
        # The reported epoch, not Tune's training_iteration: a resumed
        # trial restarts the latter at 1 but continues its epochs.
        # stop_last_trials=False: a trial that reaches its last epoch
        # ends on its own. A trial Tune stops has its actor killed (and a
        # Ray Train trial's worker group is then released only by Ray
        # Train's PlacementGroupCleaner, see the module docstring).
        scheduler=ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=tcfg.grace_period,
            reduction_factor=tcfg.reduction_factor,
            stop_last_trials=False,
        ),
        # The concurrency cap goes to the generator: Tune ignores
        # TuneConfig.max_concurrent_trials with a BasicVariantGenerator.
        search_alg=BasicVariantGenerator(random_state=tcfg.seed, max_concurrent=trial_concurrency(config, log)),
        trial_dirname_creator=trial_dirname,
    )
