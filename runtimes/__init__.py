"""sam2_edge.runtimes: one streaming tracker, many backends. numpy + the backend's runtime
only; importing this package never imports torch.

    from sam2_edge.runtimes import Tracker
    tracker = Tracker.from_bundle("bundles/tiny-onnx")          # or Tracker.from_checkpoint(...)
    result = tracker.add_prompt(frame0, obj_id=1, points=[[210, 350]], labels=[1])
    for frame in frames:
        result = tracker.track(frame)                            # result.masks [N, H, W]
"""

from ..contract import STAGES, TensorSpec, TrackerSpec
from .tracker import PreparedFrame, StageTimings, Tracker, TrackResult

__all__ = ["Tracker", "TrackResult", "PreparedFrame", "StageTimings", "TrackerSpec", "TensorSpec", "STAGES"]
