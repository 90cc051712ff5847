"""meshcap's error types: each message names the file or input and what is wrong with it."""


class MeshcapError(Exception):
    """Base class for errors the command reports as a clear message and a non-zero exit."""


class InputError(MeshcapError, ValueError):
    """A file or argument given by the user is missing, unreadable or malformed."""


class MotionFileError(InputError):
    """A motion.npz file is missing, unreadable or does not follow the schema."""


class DependencyError(MeshcapError):
    """Something this machine lacks: an optional extra, a system library (the message says
    what to install)."""
