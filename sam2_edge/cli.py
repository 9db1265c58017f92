"""The one command-line entry point: `sam2-edge <subcommand>`.

Subcommands import what they need lazily, so `sam2-edge --help` works without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Callable, Dict, List, Optional

from .errors import Sam2EdgeError

log = logging.getLogger("sam2_edge")

_COMMANDS: Dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}


def subcommand(name: str):
    def deco(fn):
        _COMMANDS[name] = fn
        return fn
    return deco


@subcommand("info")
def _info(p: argparse.ArgumentParser):
    p.description = "Describe a SAM 2 checkpoint: variant, SAM 2 vs 2.1, parameters, size, sha256."
    p.add_argument("checkpoint", help="official .pt checkpoint ({'model': state_dict})")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    def run(a: argparse.Namespace) -> int:
        from .errors import BackendUnavailableError

        try:
            from .checkpoint import check_state_dict, checkpoint_variant, parameter_names, read_state_dict
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise BackendUnavailableError("reading checkpoints needs PyTorch: pip install 'sam2-edge[torch]'") from None
            raise
        from .configs import get_config
        from .contract import sha256_file

        sd = read_state_dict(a.checkpoint)
        variant = checkpoint_variant(a.checkpoint, sd)  # a student's safetensors names its own
        cfg = get_config(variant)
        check_state_dict(sd, cfg, a.checkpoint)
        info = {
            "path": os.path.abspath(a.checkpoint),
            "variant": variant,
            "sam_version": f"SAM {cfg.version}",
            "parameters": int(sum(v.numel() for k, v in sd.items() if k in parameter_names(cfg))),
            "tensors": len(sd),
            "size_bytes": os.path.getsize(a.checkpoint),
            "sha256": sha256_file(a.checkpoint),
            "image_size": cfg.image_size,
        }
        if a.json:
            print(json.dumps(info, indent=1))
        else:
            for k, v in info.items():
                print(f"{k:12s} {v}")
        return 0
    return run


def _register_optional() -> None:
    """Subcommands defined by the subpackages (track, export, bench, demo)."""
    import importlib

    for mod in ("sam2_edge.runtimes.cli", "sam2_edge.export.cli", "sam2_edge.bench.cli", "sam2_edge.demo_cli",
                "sam2_edge.quantization.cli", "sam2_edge.evaluation.cli",
                "sam2_edge.distill.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                log.warning("subcommands of %s unavailable: %s", mod, e)
        except ImportError as e:
            log.warning("subcommands of %s unavailable: %s", mod, e)


def _version_line() -> str:
    """`sam2-edge X.Y.Z (python ..., torch ..., onnxruntime ...)`: what is installed, without importing it."""
    from importlib import metadata

    from . import __version__

    parts = [f"python {sys.version.split()[0]}"]
    for dist in ("torch", "onnxruntime", "executorch", "coremltools"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return f"sam2-edge {__version__} ({', '.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    _register_optional()
    parser = argparse.ArgumentParser(prog="sam2-edge", description="SAM 2 on edge and mobile devices")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, make in _COMMANDS.items():
        sp = sub.add_parser(name)
        sp.set_defaults(_run=make(sp))
    return parser


def int_arg(minimum: Optional[int] = None, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (argparse reports anything else)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def float_arg(minimum: Optional[float] = None, maximum: Optional[float] = None,
              above: Optional[float] = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= minimum (or > above) and <= maximum."""
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and v <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {v:g}")
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {v:g}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {v:g}")
        return v
    parse.__name__ = "number"
    return parse


def one_line(text: object) -> str:
    """A message on one line (multi-line messages, e.g. the cameras tried, joined by spaces)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_os_error(e: OSError) -> str:
    """An OSError as one line naming the path(s): "'/x/y': Permission denied"."""
    reason = e.strerror or one_line(e) or type(e).__name__
    paths = [repr(os.fsdecode(f)) for f in (e.filename, e.filename2) if f is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def run_reporting(prog: str, run: Callable[[], object], verbose: bool = False,
                  say: Optional[Callable[[str], None]] = None) -> int:
    """Run a command and turn every failure into one line and an exit code, never a traceback
    (except with -v): a Sam2EdgeError -> "PROG: error: ..." and 2; an OSError (permission,
    disk full, not found) -> the path and the reason, 1; Ctrl-C -> 130; anything else ->
    "PROG: internal error: TYPE: ... (run with -v for the traceback)", 1."""
    def emit(line: str) -> None:
        if say is not None:
            say(line)
        else:
            print(line, file=sys.stderr)

    try:
        return int(run() or 0)
    except Sam2EdgeError as e:
        if verbose:
            traceback.print_exc()
        emit(f"{prog}: error: {one_line(e)}")
        return 2
    except KeyboardInterrupt:
        emit(f"{prog}: interrupted")
        return 130
    except OSError as e:
        if verbose:
            traceback.print_exc()
        emit(f"{prog}: error: {describe_os_error(e)}")
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if verbose:
            traceback.print_exc()
            emit(f"{prog}: internal error: {type(e).__name__}: {one_line(e)}")
        else:
            emit(f"{prog}: internal error: {type(e).__name__}: {one_line(e)} (run with -v for the traceback)")
        return 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_reporting(f"sam2-edge {args.command}", lambda: args._run(args), args.verbose)


if __name__ == "__main__":
    # `python -m sam2_edge.cli`: run the package's module, where the subcommands register
    # (this file runs as __main__, a second copy whose registry only has what is defined here)
    from sam2_edge.cli import main as _package_main

    sys.exit(_package_main())
