"""neurodecode: align brain recordings (fMRI, MEG) with CLIP and other DNN activations.

Subpackages: :mod:`neurodecode.sim` (the simulated world), :mod:`neurodecode.data` (recordings ->
trials), :mod:`neurodecode.features` (stimuli -> activations), :mod:`neurodecode.models`
(LightningModules), :mod:`neurodecode.evaluate`, :mod:`neurodecode.analysis`,
:mod:`neurodecode.reconstruct`, :mod:`neurodecode.datamodules`, :mod:`neurodecode.embedded` (stand-in
models trained on the simulated world), :mod:`neurodecode.plotting`, :mod:`neurodecode.cli`.
"""

from neurodecode._version import __version__
from neurodecode.pretrained import load_pretrained

__all__ = ["__version__", "load_pretrained"]
