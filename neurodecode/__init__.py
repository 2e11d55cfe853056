"""neurodecode: align brain recordings (fMRI, MEG) with CLIP and other DNN activations.

Subpackages: :mod:`neurodecode.sim` (the simulated world), :mod:`neurodecode.data` (recordings ->
trials), :mod:`neurodecode.features` (stimuli -> activations), :mod:`neurodecode.models`
(LightningModules), :mod:`neurodecode.evaluate`, :mod:`neurodecode.analysis`,
:mod:`neurodecode.reconstruct`.
"""

__version__ = "0.1.0"

from neurodecode.pretrained import load_pretrained

__all__ = ["__version__", "load_pretrained"]
