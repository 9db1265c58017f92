"""Typed errors of sam2-edge. Each message names the problem and the fix.

Nothing here imports torch: the runtime raises these too.
"""


class Sam2EdgeError(Exception):
    """Base class of every error sam2-edge raises on purpose."""


class CheckpointError(Sam2EdgeError):
    """A checkpoint file is unreadable, not SAM 2, corrupt, or of another variant."""


class ConfigError(Sam2EdgeError, ValueError):
    """An unknown variant, format, precision or backend name, or an inconsistent configuration."""


class InputError(Sam2EdgeError, ValueError):
    """Bad user input (image, prompt, mask, frame). The state is left unchanged."""


class StateError(Sam2EdgeError, RuntimeError):
    """A call made in the wrong order (predict before set_image, track before a prompt)."""


class BundleError(Sam2EdgeError):
    """An exported bundle is missing, altered, of a newer schema or inconsistent."""


class OutputError(Sam2EdgeError):
    """An output path (bundle or track folder, video, mask, JSON, plot, snapshot) cannot be written
    there, or it would replace something sam2-edge did not make. The message names the path and the fix."""


class BackendUnavailableError(Sam2EdgeError, ImportError):
    """The runtime package a backend needs is not installed; the message names the extra."""
