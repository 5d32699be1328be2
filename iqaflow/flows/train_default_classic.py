"""The default NR scorer's training flow: features, synthetic pre-training set, fit, ship (orchestration only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iqaflow.config.default_nr_classic import DefaultNrRecipe
from iqaflow.tasks.learn import default_nr_classic as t

RECIPE = "configs/default_nr_classic.yaml"
_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
read_rated_task = task(t.read_rated, name="rated-features", **_opts)
crops_task = task(t.pristine_crops, name="pristine-crops", **_opts)
synthetic_task = task(t.synthetic_set, name="synthetic-features", **_opts)
fit_task = task(t.fit_state, name="fit", **_opts)
write_task = task(t.write_weights, name="write-weights", **_opts)


@dataclass
class TrainDefaultResult:
    path: str
    sha256: str
    n_images: int
    n_synthetic: int


@flow(name="iqaflow-train-default", log_prints=False)
def train_default_flow(recipe: DefaultNrRecipe, recipe_name: str = RECIPE) -> TrainDefaultResult:
    log = get_run_logger()
    rated = read_rated_task(recipe)
    log.info("features of %d rated images from %s", len(rated.mos), recipe.mos)
    synthetic = None
    if recipe.model.pretrain_steps > 0 and recipe.model.krr_weight < 1:
        crops = crops_task(recipe)
        synthetic = synthetic_task(crops, recipe.pretrain.distortions, recipe.seed)
        log.info("synthetic pre-training set: %d images from %d pristine crops", len(synthetic.level), len(crops))
    state = fit_task(recipe, rated, synthetic, t.read_notice(recipe))
    digest = write_task(state, recipe.out, t.notice_text(t.read_notice(recipe), recipe_name))
    return TrainDefaultResult(f"{recipe.out}/{t.WEIGHTS_FILE}", digest, len(rated.mos),
                              0 if synthetic is None else len(synthetic.level))


def run_train_default(recipe: DefaultNrRecipe, recipe_name: str = RECIPE) -> TrainDefaultResult:
    return train_default_flow(recipe, recipe_name)
