"""One image's state through the shard loop: fetched bytes, decoded pixels, scores, the first failure.

Shared by the CPU loop (``shard``) and the tensor path (``gpu``), below both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iqaflow.models.fingerprints import Fingerprints
from iqaflow.models.printing.defects import Inspection
from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode import DEFAULT_MAX_PIXELS, Decoded
from iqaflow.tasks.io.read import Fetched
from iqaflow.tasks.score.domain import AlignInfo, DomainSettings


@dataclass
class Row:
    uri: str
    reference_uri: str | None
    fetched: Fetched
    decoded: Decoded | None = None
    error_code: str | None = None
    error_message: str | None = None
    decode_ms: float = 0.0
    score_ms: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    needs_reference: bool = False  # the run has FR scorers
    ref_fetched: Fetched | None = None
    ref_pixels: np.ndarray | None = None  # set only when the reference decoded and its size matches
    ref_converted: dict[str, np.ndarray] = field(default_factory=dict)
    domain: DomainSettings = field(default_factory=DomainSettings)
    align: AlignInfo | None = None
    heatmap_uri: str | None = None
    inspection: Inspection | None = None  # print inspection of the page against its master
    fingerprint: Fingerprints | None = None  # exact and perceptual hashes of the decoded pixels
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # image and reference alike, so same-size pairs stay the same size

    def fail(self, code: ErrorCode, message: str) -> None:
        if self.error_code is None:  # the first failure is the cause
            self.error_code, self.error_message = code.value, message[:1000]
