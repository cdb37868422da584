"""The errors recon raises. Every one is a ``ReconError``; each also subclasses the builtin it resembles."""


class ReconError(Exception):
    """Base class of every error recon raises on purpose."""


class InputError(ReconError, ValueError):
    """The input cannot be used as given: the message names the file and the fix."""


class NoCTSeriesError(InputError):
    """The input holds DICOM, but no series that is a CT volume."""


class AmbiguousSeriesError(InputError):
    """Several CT series are equally good candidates; the caller must choose one."""


class CorruptFileError(InputError):
    """A file is truncated or its header contradicts itself."""


class TooLargeError(InputError):
    """A header claims a matrix larger than recon agrees to allocate."""


class MissingDecoderError(ReconError, RuntimeError):
    """Pixel data is compressed with a transfer syntax whose decoder package is not installed."""


class GeometryError(ReconError, ValueError):
    """A grid or transform is not valid (non-orthonormal direction, non-positive spacing, ...)."""


class OutputBusyError(ReconError, RuntimeError):
    """Another recon process is writing into the same output folder."""
