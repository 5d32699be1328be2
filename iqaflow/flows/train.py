"""The training flow: pre-train by ranking and/or fine-tune on MOS, log curves, register the model."""

from __future__ import annotations

from typing import Any

import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iqaflow.config.train import TrainConfig
from iqaflow.models.device import resolve_device
from iqaflow.tasks.learn import train as t
from iqaflow.tasks.report import track

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
load_pristine_task = task(t.load_pristine, name="load-pristine", **_opts)
read_mos_task = task(t.read_mos_csv, name="read-mos", **_opts)
pretrain_task = task(t.pretrain_stage, name="pretrain", **_opts)
finetune_task = task(t.finetune_stage, name="finetune", **_opts)
register_task = task(t.register_model, name="register", **_opts)


@flow(name="iqaflow-train", log_prints=False)
def train_flow(config: TrainConfig) -> t.TrainResult:
    log = get_run_logger()
    uri = config.tracking_uri()
    client, run_id = track.start_run(uri, config.mlflow_experiment, config.name,
                                     {"iqaflow.kind": "train", "iqaflow.model": config.name})
    threads = torch.get_num_threads()
    try:
        if config.threads:  # on a shared CPU fewer threads than cores is much faster than oversubscribing
            torch.set_num_threads(config.threads)
        device = resolve_device(config.device)
        track.log_values(client, run_id, {**track.safe_params(config.model_dump()), "resolved_device": device})
        curves = t.Curves(client, run_id)
        state, scale, shift, metrics, info = None, 1.0, 0.0, {}, {"stages": []}
        if config.pristine:
            images = load_pristine_task(config.pristine)
            log.info("pre-training on %d pristine images (%s)", len(images), device)
            pre = pretrain_task(config, images, device, curves)
            state = pre.state
            metrics.update({f"pretrain.best_{k}": v for k, v in pre.best.items() if k.startswith("val_")})
            info["stages"].append({"stage": "pretrain", "images": len(images), "best_epoch": pre.best_epoch})
        if config.mos:
            items = read_mos_task(config.mos, config.images)
            log.info("fine-tuning on %d rated images (%s split)", len(items), config.split)
            fine, scale, shift, summary = finetune_task(config, items, state, device, curves)
            state = fine.state
            metrics.update(summary)
            info["stages"].append({"stage": "finetune", "images": len(items), "best_epoch": fine.best_epoch})
        track.log_values(client, run_id, metrics=metrics)
        model_uri = register_task(config, client, run_id, state, scale, shift, info)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    finally:
        torch.set_num_threads(threads)
    scorer = f"mlflow:{model_uri}" if model_uri else None
    log.info("trained %s: run %s%s", config.name, run_id, f", registered as {model_uri}" if model_uri else "")
    return t.TrainResult(run_id, uri, model_uri, scorer, metrics)


def run_train(config: TrainConfig) -> t.TrainResult:
    return train_flow(config)
