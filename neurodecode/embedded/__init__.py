"""Stand-in models trained on the simulated world, because no weights can be downloaded here:
sim-clip and its convnet tower, the image generator, the VAE, the category judge, the prefix
captioner and the caption bank. They implement the library's protocols (a CLIP-like encoder, a
generator) and are cached under one root (:func:`.cache.cache_root`)."""
