"""Dehazing networks, one module per paper, and the name -> builder registry."""
from tfdehaze.models.guided_pix2pix import GuidedPix2Pix, PatchDiscriminator, Pix2PixUNet
from tfdehaze.models.minet import MINet
from tfdehaze.models.registry import build, describe, load, names, register

__all__ = ["GuidedPix2Pix", "MINet", "PatchDiscriminator", "Pix2PixUNet", "build", "describe", "load", "names",
           "register"]
