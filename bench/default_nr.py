"""iqaflow_nr: accuracy against views and speed, in one table.

    python bench/default_nr.py [--config configs/default_nr.yaml] [--speed-images 200] [--json PATH]

For each view set (the whole image plus 0, 1, 2 or 5 native-resolution crops) the recipe's regressor
is fitted on the training sources (C and gamma by CV on them, as train-default does) and measured on
the held-out test split and, fitted without it, on the cross-dataset source. Speed: images/s on one
thread, file read and JPEG decode included, 512x512 photos of the test split, with the backbone in
bf16 (where the CPU has it natively) and in fp32. Features come from the recipe's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iqaflow.config.default_nr import load_recipe  # noqa: E402
from iqaflow.evaluation.crossval import fold_agreement  # noqa: E402
from iqaflow.models.deep.default_nr import IqaflowNR  # noqa: E402
from iqaflow.models.deep.nets.default_nr_net import DefaultNrNet  # noqa: E402
from iqaflow.models.device import native_bf16  # noqa: E402
from iqaflow.tasks.learn import default_nr as t  # noqa: E402
from iqaflow.tasks.learn.default_nr_classic import decode_rgb  # noqa: E402
from iqaflow.tasks.learn.default_nr_train import backbone, source_features  # noqa: E402

VIEW_SETS = (0, 1, 2, 5)


def speed(graph: dict, head: dict, paths: list[str], crops: int, bf16: bool) -> float:
    """Images/s of the scorer with ``crops`` crops on one thread: read, decode, views, network, head."""
    scorer = IqaflowNR()
    scorer.load(graph, {**head, "crops": crops})
    scorer.cpu_bf16 = bf16
    scorer.score([decode_rgb(p) for p in paths[:2]])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(paths), 16):
        scorer.score([decode_rgb(p) for p in paths[s : s + 16]])
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/default_nr.yaml")
    ap.add_argument("--speed-images", type=int, default=200)
    ap.add_argument("--json", default="bench/results/default_nr_views.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(args.config)
    graph, sha = backbone()
    data = {s.name: source_features(recipe, s, graph, sha) for s in recipe.train}
    test = recipe.evaluation.test
    cross = recipe.evaluation.cross
    test_rated, test_feats = source_features(recipe, test, graph, sha)
    paths = test_rated.paths[: args.speed_images]
    rows = []
    for crops in VIEW_SETS:
        x = np.concatenate([t.pooled(f, crops) for _, f in data.values()])
        y = np.concatenate([r.mos for r, _ in data.values()])
        fitted = t.fit_head(x, y, recipe.regressor, recipe.seed)
        row = {"crops": crops, "views": 1 + crops, "C": fitted.c, "gamma": fitted.gamma,
               "cv_srcc_train": max(fitted.cv_srcc.values()),
               "test": fold_agreement(t.predict(fitted.state, t.pooled(test_feats, crops)), test_rated.mos)}
        if cross is not None:
            others = [n for n in data if n != cross]
            xo = np.concatenate([t.pooled(data[n][1], crops) for n in others])
            yo = np.concatenate([data[n][0].mos for n in others])
            alone = t.fit_head(xo, yo, recipe.regressor, recipe.seed)
            row["cross"] = fold_agreement(t.predict(alone.state, t.pooled(data[cross][1], crops)), data[cross][0].mos)
        head = {**fitted.state, "crops": crops, "crop_side": recipe.views.crop_side}
        DefaultNrNet(graph, head)  # the head loads as the scorer would
        row["img_s_fp32"] = speed(graph, head, paths, crops, False)
        row["img_s_bf16"] = speed(graph, head, paths, crops, True) if native_bf16() else None
        rows.append(row)
        print(f"views {1 + crops}: test SRCC {row['test']['srcc']:.4f} PLCC {row['test']['plcc']:.4f}"
              + (f", {cross} SRCC {row['cross']['srcc']:.4f}" if "cross" in row else "")
              + f"; {row['img_s_fp32']:.1f} img/s fp32"
              + (f", {row['img_s_bf16']:.1f} img/s bf16" if row["img_s_bf16"] else ""), flush=True)
    out = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": 1,
           "native_bf16": native_bf16(), "speed_images": len(paths), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
