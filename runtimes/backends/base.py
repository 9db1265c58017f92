"""The backend interface: a backend only runs the graphs of `spec.graph_keys()` (the four
stages, and the per-object stages for each batch of `spec.obj_batches`). Inputs and outputs are
numpy arrays in the order and shapes of `TrackerSpec.graph_io()`."""

from __future__ import annotations

import abc
from typing import List, Tuple

import numpy as np

from ...contract import TrackerSpec
from ...contract.spec import split_objects


class Backend(abc.ABC):
    name: str = "?"

    def __init__(self, spec: TrackerSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def run(self, stage: str, inputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
        """Run one graph. `stage` is one of spec.graph_keys() ("mask_decoder@4": the batch-4 graph)."""

    def check_stage(self, stage: str) -> None:
        assert stage in self.spec.graph_keys(), stage

    def object_batches(self, n: int) -> List[int]:
        """How the tracker groups `n` objects into calls of the per-object stages: batches the
        bundle has graphs for (`split_objects`). A backend with dynamic shapes runs all at once."""
        return split_objects(n, self.spec.obj_batches)

    def describe(self) -> str:
        return self.name
