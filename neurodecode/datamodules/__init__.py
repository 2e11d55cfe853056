"""LightningDataModules that join trials (:mod:`neurodecode.data`) with features
(:mod:`neurodecode.features`) by stimulus id: :mod:`.nsd` for fMRI, :mod:`.meg` for MEG."""
