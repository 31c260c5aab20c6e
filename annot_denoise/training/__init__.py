"""Fit a network on annotated -> clean pairs.

- :mod:`.data`: pairs from ``synth`` folders or drawn on the fly, splits, patches;
- :mod:`.augment`: geometric and photometric augmentation of a pair;
- :mod:`.losses`: the detector and inpainter losses;
- :mod:`.loop`: the training loop (AMP, DDP, resume, NaN guard);
- :mod:`.validation`: scoring on the held-out pairs between epochs;
- :mod:`.checkpoint`: what a checkpoint holds and how it is validated and loaded;
- :mod:`.rundir`: the run folder (config, logs, checkpoints, resume state).
"""
