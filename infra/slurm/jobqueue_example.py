"""Score a collection on a SLURM cluster: dask-jobqueue starts Dask workers as batch jobs.

    pip install dask-jobqueue
    python infra/slurm/jobqueue_example.py /scratch/photos --out /scratch/qa --jobs 8

The flow itself runs here (a login or head node); each SLURM job is one Dask worker process with
one GPU, reading images from the shared filesystem (or S3) and writing results to ``--out``.
Not imported by the tests (dask-jobqueue is optional); they only check that it compiles.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs = Dask workers")
    parser.add_argument("--queue", default="gpu")
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--gates", default=None, help="gate file, e.g. examples/curation.yaml")
    args = parser.parse_args()

    from dask_jobqueue import SLURMCluster

    from iqaflow.config.run import build_config
    from iqaflow.flows.score import run_score

    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=8,  # CPU cores per job: decoding threads
        processes=1,  # one worker process per job: the scorers load their weights once per process
        memory="32GB",
        walltime=args.walltime,
        job_extra_directives=["--gres=gpu:1"],
        job_script_prologue=["module load cuda", "source ~/iqaflow/.venv/bin/activate"],
        worker_extra_args=["--resources", "GPU=1"],
        local_directory="$TMPDIR",
        log_directory="slurm-logs",
    )
    cluster.scale(jobs=args.jobs)
    try:
        config = build_config({
            "source": args.source, "out": args.out, "dask_address": cluster.scheduler_address,
            "device": "cuda", "shard_size": 2000, "gates": args.gates,
        })
        summary = run_score(config)
        print(f"{summary.images} images, {summary.errors} errors -> {summary.results_dir}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
