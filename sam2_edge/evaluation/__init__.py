"""sam2_edge.evaluation: the VOS scores J (region IoU), F (boundary F-measure) and J&F as the
DAVIS evaluator defines them (`metrics`, numpy + cv2 only), a DAVIS-layout dataset reader
(`davis`) and `sam2-edge eval` (`cli`): a checkpoint or bundle scored on DAVIS-layout data, or
against another model's masks as pseudo ground truth (e.g. int8 vs fp32).

Importing this package imports only the metrics.
"""

from .metrics import boundary_prf, f_measure, jaccard, mean_scores, score_sequence, seg2bmap

__all__ = ["jaccard", "f_measure", "boundary_prf", "seg2bmap", "score_sequence", "mean_scores"]
