"""Smoke-run a bundle in a child process before this process trusts it.

A hostile or corrupt graph can take a native runtime down (ExecuTorch aborts on a program
with a non-UTF-8 identifier and segfaults on a flipped byte; any runtime can crash inside a
kernel). `smoke_in_child` runs a fresh Python that reads and verifies the bundle exactly as
`open_bundle` does, builds the backend and runs every stage graph once on valid example
inputs; a crash there (a signal, an abort) becomes a BundleError in the parent, which only
then loads the same bytes itself. The child checks that it read the very manifest the parent
hashed (same sha256), and both check every graph's sha256 against it, so the child tested
the bytes the parent runs.

    python -m sam2_edge.runtimes.smoke BUNDLE BACKEND OPTIONS_JSON MANIFEST_SHA256
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Mapping

from .. import errors
from ..errors import BundleError, Sam2EdgeError

log = logging.getLogger(__name__)

# the typed errors a refusal in the child is raised as in the parent
_ERRORS = {name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, Sam2EdgeError)}
TIMEOUT_S = 900.0  # a 1024-px model on a slow board: load + one run of each graph
EXIT_REFUSED = 3


def smoke_in_child(root, backend: str, options: Mapping, manifest_sha256: str, timeout: float = TIMEOUT_S) -> float:
    """Run the smoke test of bundle `root` in a child process; seconds it took. BundleError
    when the child crashes, hangs past `timeout` or refuses the bundle."""
    try:
        opts = json.dumps(dict(options))
    except (TypeError, ValueError):
        raise BundleError("the backend options cannot be passed to the isolated smoke run (not JSON); pass "
                          "isolate=False for a bundle you trust, or sign it") from None
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "sam2_edge.runtimes.smoke", os.fspath(root), backend, opts, manifest_sha256]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BundleError(f"loading bundle {root} did not finish within {timeout:.0f} s in the isolated smoke run; "
                          "do not use it") from None
    seconds = time.perf_counter() - t0
    if r.returncode == 0:
        log.info("bundle %s: isolated load + smoke run of every graph passed in %.1f s", root, seconds)
        return seconds
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = f"signal {-r.returncode}"
        raise BundleError(f"bundle {root} crashed the {backend} runtime ({sig}) when its graphs were loaded and "
                          "run in an isolated process; the bundle is corrupt or malicious. Do not use it; "
                          "re-export it.")
    lines = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {r.returncode}"
    if r.returncode == EXIT_REFUSED:  # a typed refusal: raise the same error here
        try:
            doc = json.loads(reason)
            cls = _ERRORS.get(doc["type"], BundleError)
            raise cls(str(doc["message"]))
        except (ValueError, KeyError, TypeError):
            raise BundleError(reason) from None
    raise BundleError(f"bundle {root} failed its isolated smoke run with the {backend} runtime (exit "
                      f"{r.returncode}): {reason}")


def _child(root: str, backend: str, options: dict, manifest_sha256: str) -> None:
    from ..contract import sha256_bytes
    from ..contract.bundle_dir import read_bundle
    from ..contract.examples import example_inputs
    from .bundle_backends import _backend_class

    bundle = read_bundle(root)
    if sha256_bytes(bundle.manifest_bytes) != manifest_sha256:
        raise BundleError(f"the manifest of {root} changed while it was being opened; do not use this bundle")
    cls, _ = _backend_class(backend)
    be = cls(bundle.manifest.spec, bundle.graphs, **options)
    io = bundle.manifest.spec.graph_io()  # every graph, the batched ones too
    for stage in io:
        outs = be.run(stage, example_inputs(bundle.manifest.spec, stage))
        exp = io[stage][1]
        got = [tuple(o.shape) for o in outs]
        if got != [t.shape for t in exp]:
            raise BundleError(f"the {stage} graph returned shapes {got}, the bundle spec says "
                              f"{[t.shape for t in exp]}; do not use this bundle")


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m sam2_edge.runtimes.smoke BUNDLE BACKEND OPTIONS_JSON MANIFEST_SHA256", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    try:
        _child(args[0], args[1], json.loads(args[2]), args[3])
    except Sam2EdgeError as e:
        print(json.dumps({"type": type(e).__name__, "message": str(e)}), file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
