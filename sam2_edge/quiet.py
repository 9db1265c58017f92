"""Quiet third-party libraries while sam2-edge drives them (exports, benchmarks).

Exporting a model prints thousands of lines that are not the user's business: a CoreML export
~9,000 (MIL pass progress, INFO logs), an ExecuTorch export ~180 warnings (torch.export,
XNNPACK partitioner), ONNX's dynamo exporter its own. `quiet()` turns them down for the
duration of a block and restores everything on exit:

* the named third-party loggers (`THIRD_PARTY_LOGGERS`) are set to ERROR, and records logged
  on the root logger itself (``logging.warning(...)`` inside a library) below ERROR are
  dropped; sam2-edge's own loggers are never touched;
* `warnings` raised by third-party modules (`THIRD_PARTY_MODULES`) and torch's tracer /
  export warning categories are ignored; a warning from sam2_edge is never filtered;
* `TQDM_DISABLE=1` (progress bars of coremltools and friends);
* optionally (`fd=True`) everything written to file descriptor 2 (native C / C++ logging:
  glog, XNNPACK's cpuinfo, CoreML; libraries' prints to sys.stderr) goes to a temporary file
  instead of the terminal, while the logging handlers that wrote to fd 2 (sam2-edge's log lines)
  keep writing to the terminal; the block gets that terminal stream for a progress bar. If the
  block raises, the last lines of what was captured are written out so the error keeps its
  context.

A no-op when the ``sam2_edge`` logger is at DEBUG (``sam2-edge -v``): then everything shows.

Standard library only (base layer).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ["quiet", "THIRD_PARTY_LOGGERS", "THIRD_PARTY_MODULES", "is_verbose"]

THIRD_PARTY_LOGGERS: Tuple[str, ...] = (
    "torch", "torch.export", "torch._export", "torch._dynamo", "torch._inductor", "torch.fx",
    "torch.fx.experimental.symbolic_shapes", "torch.onnx", "torch._subclasses", "torch.utils._sympy",
    "torch._functorch", "torch.ao", "torchao",
    "onnx", "onnxscript", "onnx_ir", "onnxruntime",
    "executorch", "coremltools", "absl", "numexpr",
)
# packages whose `warnings.warn` calls are ignored inside `quiet()` (regex on the warning's module)
THIRD_PARTY_MODULES: Tuple[str, ...] = ("torch", "torchao", "onnx", "onnxscript", "onnx_ir", "onnxruntime",
                                        "executorch", "coremltools", "google.protobuf", "absl", "sympy")
# warning categories that only third-party libraries raise (looked up only if already imported)
_CATEGORIES: Tuple[Tuple[str, str], ...] = (("torch.jit", "TracerWarning"),
                                            ("torch.onnx.errors", "OnnxExporterWarning"))


def is_verbose() -> bool:
    """True when sam2-edge logs at DEBUG (``-v``): third-party output is then left alone."""
    return logging.getLogger("sam2_edge").isEnabledFor(logging.DEBUG)


class _DropRootRecords(logging.Filter):
    """Drops records logged directly on the root logger (by a library) below ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.levelno < logging.ERROR)


def _own_roots() -> Tuple[str, ...]:
    """The folders of sam2-edge's code (the packages laid out at the top of a checkout too)."""
    roots = {os.path.dirname(os.path.abspath(__file__))}
    for name in ("sam2_edge.export", "sam2_edge.runtimes", "sam2_edge.quantization", "sam2_edge.evaluation"):
        mod = sys.modules.get(name)
        f = getattr(mod, "__file__", None)
        if f:
            roots.add(os.path.dirname(os.path.abspath(f)))
    return tuple(r + os.sep for r in roots)


def _own_warnings_only(show):
    roots = _own_roots()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(str(filename)).startswith(roots):
            show(message, category, filename, lineno, file, line)

    return showwarning


def _module_regex(modules: Sequence[str]) -> str:
    return r"^(" + "|".join(m.replace(".", r"\.") for m in modules) + r")(\.|$)"


@contextlib.contextmanager
def _fd2_to_file(tail_lines: int) -> Iterator[Optional[io.TextIOBase]]:
    """Point file descriptor 2 at a temporary file. The logging handlers that wrote to fd 2 keep
    the original destination (a duplicate of the old fd 2), which is also yielded for a progress
    display; everything else written to fd 2 or sys.stderr (native logging, libraries' prints)
    is captured."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield None
        return
    capture = tempfile.TemporaryFile(mode="w+b")
    real = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding="utf-8",
                            errors="replace", line_buffering=True, write_through=True)
    swapped: List[Tuple[logging.StreamHandler, object]] = []
    try:
        for h in _stream_handlers():
            if _fileno(getattr(h, "stream", None)) == 2:
                getattr(h, "stream").flush()
                swapped.append((h, h.setStream(real)))
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield real
        except BaseException:
            failed = True
            raise
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(saved, 2)
            for h, s in swapped:
                h.setStream(s)  # type: ignore[arg-type]
            if failed and tail_lines > 0:
                capture.seek(0)
                lines = capture.read().decode("utf-8", "replace").splitlines()[-tail_lines:]
                if lines:
                    sys.stderr.write("--- last lines of the libraries' output ---\n" + "\n".join(lines) + "\n")
                    sys.stderr.flush()
    finally:
        os.close(saved)
        real.close()
        capture.close()


def _fileno(stream: object) -> Optional[int]:
    try:
        return stream.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return None


def _stream_handlers() -> List[logging.StreamHandler]:
    out = []
    for lg in [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]:
        out.extend(h for h in lg.handlers if type(h) is logging.StreamHandler)
    return out


@contextlib.contextmanager
def quiet(loggers: Sequence[str] = THIRD_PARTY_LOGGERS, modules: Sequence[str] = THIRD_PARTY_MODULES,
          fd: bool = False, tail_lines: int = 40, force: bool = False) -> Iterator[io.TextIOBase]:
    """Silence third-party logging / warnings (and with `fd=True` native stderr output) inside
    the block; everything is restored on exit. A no-op at DEBUG unless `force`.

    Yields the stream that still reaches the user's stderr (for a progress bar drawn inside the
    block): with `fd=True` a duplicate of the original fd 2, else sys.stderr."""
    if is_verbose() and not force:
        yield sys.stderr
        return
    saved_levels = []
    prefixes = tuple(n + "." for n in loggers)
    names = set(loggers) | {n for n, v in logging.Logger.manager.loggerDict.items()
                            if isinstance(v, logging.Logger) and n.startswith(prefixes)}
    for name in sorted(names):  # child loggers with a level of their own (torch sets some) too
        lg = logging.getLogger(name)
        saved_levels.append((lg, lg.level))
        if lg.level < logging.ERROR:
            lg.setLevel(logging.ERROR)
    root_filter = _DropRootRecords()
    root_handlers = list(logging.getLogger().handlers)
    for h in root_handlers:
        h.addFilter(root_filter)
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_module_regex(modules))
            for mod, cls in _CATEGORIES:
                cat = getattr(sys.modules.get(mod), cls, None)
                if isinstance(cat, type) and issubclass(cat, Warning):
                    warnings.filterwarnings("ignore", category=cat)
            # what the filters cannot catch (a library's warning attributed to the standard library,
            # e.g. torch's LeafSpec FutureWarning raised from copyreg): only warnings whose code is
            # sam2-edge's own are shown
            warnings.showwarning = _own_warnings_only(warnings.showwarning)
            if fd:
                with _fd2_to_file(tail_lines) as real:
                    yield real if real is not None else sys.stderr
            else:
                yield sys.stderr
    finally:
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
        for h in root_handlers:
            h.removeFilter(root_filter)
        for lg, level in saved_levels:
            lg.setLevel(level)
