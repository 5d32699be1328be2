"""Run a compiled expectation suite with Great Expectations 1.x and build its HTML data docs.

An ephemeral GX context holds the suite, a pandas data source with one whole-dataframe batch
definition, an in-memory validation results store and a filesystem data docs site in a working
folder; the caller copies the folder beside the run's results (local or object store).

We validate with ``Batch.validate(suite)`` and store the result ourselves instead of running a
``Checkpoint``: with numpy 2, GX 1.24's quantile expectation reports ``success`` as ``numpy.bool_``,
which the checkpoint's JSON store cannot serialise. Normalising the result before it is stored
keeps GX's own store, renderers and data docs unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqaflow.schemas.gx_suite import ExpectationSpec

DOCS_SITE = "iqaflow"


@dataclass
class GxOutcome:
    success: bool
    result: dict[str, Any]  # the ExpectationSuiteValidationResult as JSON
    docs_index: Path  # index.html of the data docs site in the working folder
    docs_root: Path


def _plain(value: Any) -> Any:
    """numpy scalars/arrays inside a GX result -> Python values JSON can write."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _normalise(result: Any) -> None:
    result.success = bool(result.success)
    for r in result.results:
        r.success = bool(r.success)
        if isinstance(r.result, dict):
            r.result = _plain(r.result)


def run_suite(frame: pd.DataFrame, expectations: list[ExpectationSpec], suite_name: str, run_name: str,
              workdir: Path) -> GxOutcome:
    """Validate ``frame`` against ``expectations``; the data docs site is written under ``workdir``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # GX pins this module's logger to INFO and announces a temporary docs folder on every context.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    docs_root = workdir / "data_docs"
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(site_name=DOCS_SITE, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_root)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    batch_def = (context.data_sources.add_pandas("iqaflow").add_dataframe_asset("results")
                 .add_batch_definition_whole_dataframe("run"))
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=[
        ExpectationConfiguration(type=e.type, kwargs=e.kwargs, meta=e.meta).to_domain_obj() for e in expectations
    ]))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format="SUMMARY")
    _normalise(result)
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.datetime.now(datetime.timezone.utc))
    result.meta["run_id"] = run_id
    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    context.validation_results_store.store_validation_results(
        suite_validation_result=result,
        suite_validation_result_identifier=ValidationResultIdentifier(
            expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=batch.id
        ),
        expectation_suite_identifier=suite_id,
    )
    context.build_data_docs(site_names=[DOCS_SITE])
    return GxOutcome(bool(result.success), _plain(result.to_json_dict()), docs_root / "index.html", docs_root)
