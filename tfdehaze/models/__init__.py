"""Dehazing networks, one module per paper; importing this package registers every model name in
`tfdehaze.registry.MODELS` (``registry.names()`` lists them).

Examples:
    >>> from tfdehaze import models
    >>> models.build is models.registry.build, "minet-official" in models.names()
    (True, True)
"""
from tfdehaze.models import registry
from tfdehaze.models.guided_pix2pix import GuidedPix2Pix, PatchDiscriminator, Pix2PixUNet
from tfdehaze.models.kddn import KDDNStudent, KDDNTeacher
from tfdehaze.models.minet import MINet, MINetOfficial
from tfdehaze.models.rfd import MCFSRCNN, RFDStudent

build, load, names = registry.build, registry.load, registry.names
describe, register = registry.describe, registry.register

__all__ = ["GuidedPix2Pix", "KDDNStudent", "KDDNTeacher", "MCFSRCNN", "MINet", "MINetOfficial", "PatchDiscriminator",
           "Pix2PixUNet", "RFDStudent", "build", "describe", "load", "names", "register", "registry"]
