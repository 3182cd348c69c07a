"""Training losses, each returning one value per example (shape ``(N,)``), registered by name in
`tfdehaze.registry.LOSSES` so that recipes list them as ``{type, weight, **options}`` terms (`terms`).

- ``pixel``: `l1`, `mse`.
- ``adversarial``: `discriminator_loss`, `generator_gan_loss` (registered as ``gan``).
- ``perceptual``: `PerceptualLoss` (VGG19 features from a local weights file), `tiny_vgg` (a stand-in for tests).
- ``mimicking``: `fmil`, `wfmil`, `haze_density` (KDDN's feature imitation losses).
- ``affinity``: `FeatureAffinityLoss` / `feature_affinity_loss` (RFD's L_FA, registered as ``affinity``).
"""
from tfdehaze.losses.adversarial import discriminator_loss, generator_gan_loss
from tfdehaze.losses.affinity import FeatureAffinityLoss, feature_affinity_loss
from tfdehaze.losses.mimicking import fmil, haze_density, wfmil
from tfdehaze.losses.perceptual import PerceptualLoss, tiny_vgg
from tfdehaze.losses.pixel import l1, mse, per_example_mean  # noqa: I001  (terms first: it defines register_loss)
from tfdehaze.losses.terms import DEFAULT_INPUTS, Term, build_term, build_terms, register_loss, total, weighted_sum

__all__ = ["DEFAULT_INPUTS", "FeatureAffinityLoss", "PerceptualLoss", "Term", "build_term", "build_terms",
           "discriminator_loss", "feature_affinity_loss", "fmil", "generator_gan_loss", "haze_density", "l1", "mse",
           "per_example_mean", "register_loss", "tiny_vgg", "total", "weighted_sum", "wfmil"]
