"""The backend interface: a backend only runs the four stage graphs of `spec.STAGES`.
Inputs and outputs are numpy arrays in the order and shapes of `TrackerSpec.io()`."""

from __future__ import annotations

import abc
from typing import Tuple

import numpy as np

from ...contract import STAGES, TrackerSpec


class Backend(abc.ABC):
    name: str = "?"

    def __init__(self, spec: TrackerSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        """Run one stage graph. `stage` is one of spec.STAGES."""

    def check_stage(self, stage: str) -> None:
        assert stage in STAGES, stage

    def describe(self) -> str:
        return self.name
