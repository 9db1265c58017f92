"""The one command-line entry point: `sam2-edge <subcommand>`.

Subcommands import what they need lazily, so `sam2-edge --help` works without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
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
        from .errors import BackendUnavailableError, CheckpointError

        try:
            from .checkpoint import check_state_dict, match_variant, parameter_names, read_state_dict
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise BackendUnavailableError("reading checkpoints needs PyTorch: pip install 'sam2-edge[torch]'") from None
            raise
        from .configs import get_config
        from .contract import sha256_file

        sd = read_state_dict(a.checkpoint)
        variant = match_variant(sd)
        if variant is None:
            raise CheckpointError(f"{a.checkpoint!r} matches no known SAM 2 variant")
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

    for mod in ("sam2_edge.runtimes.cli", "sam2_edge.export.cli", "sam2_edge.bench.cli", "sam2_edge.demo_cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                log.warning("subcommands of %s unavailable: %s", mod, e)
        except ImportError as e:
            log.warning("subcommands of %s unavailable: %s", mod, e)


def build_parser() -> argparse.ArgumentParser:
    _register_optional()
    parser = argparse.ArgumentParser(prog="sam2-edge", description="SAM 2 on edge and mobile devices")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, make in _COMMANDS.items():
        sp = sub.add_parser(name)
        sp.set_defaults(_run=make(sp))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except Sam2EdgeError as e:
        print(f"sam2-edge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
