"""Synthetic CT of the lower spine and hips with labels and exact truth (``make_phantom``)."""

from recon.phantom.generate import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom"]
