"""The bundle contract: what the exporters write and the runtime reads, in one place.

Standard library + numpy only, so torch-free devices import it; the exporters, the runtime
backends, the tracker, the CLI and the benchmark all import these definitions and define
none of their own:

* `spec`          -- TrackerSpec / TensorSpec: every stage graph's inputs and outputs, ring capacities
* `codes`         -- point-label and mask-mode codes, MAX_CLICKS
* `formats`       -- bundle formats, the Precision enum, backends and their pip extras
* `preprocessing` -- normalisation constants and the resize / colour conventions
* `hashing`       -- sha256 of files, buffers and graph packages
* `manifest`      -- the Manifest dataclass: `to_json` (exporter) and `from_json` (loader, validating)
* `bundle_dir`    -- `load_manifest`: a bundle folder's manifest plus its files, paths and hashes
"""

from .codes import (LABEL_ABSENT, LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_NOT_A_POINT, LABEL_POS, MASK_FULL_BINARY,
                    MASK_LOWRES_LOGITS, MASK_NONE, MAX_CLICKS)
from .formats import (BACKEND_ALIASES, BACKENDS, FORMATS, BackendInfo, BundleFormat, Precision, backend_unavailable,
                      resolve_backend)
from .hashing import hash_graph, sha256_bytes, sha256_file
from .bundle_dir import load_manifest
from .manifest import MANIFEST_NAME, SCHEMA_VERSION, DataFile, GraphEntry, Manifest, Preprocessing, tensor_to_dict
from .preprocessing import COLOUR_ORDER, IMG_MEAN, IMG_STD, RESIZE_PIL_BICUBIC
from .spec import STAGES, TensorSpec, TrackerSpec

__all__ = [
    "LABEL_ABSENT", "LABEL_BOX_BR", "LABEL_BOX_TL", "LABEL_NEG", "LABEL_NOT_A_POINT", "LABEL_POS", "MASK_FULL_BINARY",
    "MASK_LOWRES_LOGITS", "MASK_NONE", "MAX_CLICKS", "BACKEND_ALIASES", "BACKENDS", "FORMATS", "BackendInfo",
    "BundleFormat", "Precision", "backend_unavailable", "resolve_backend", "hash_graph", "sha256_bytes", "sha256_file",
    "MANIFEST_NAME", "SCHEMA_VERSION", "DataFile", "GraphEntry", "Manifest", "Preprocessing", "load_manifest",
    "tensor_to_dict", "COLOUR_ORDER", "IMG_MEAN", "IMG_STD", "RESIZE_PIL_BICUBIC", "STAGES", "TensorSpec", "TrackerSpec",
]
