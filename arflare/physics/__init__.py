"""Physical parameters of magnetograms: what a physics-based flare forecaster sees.

:mod:`arflare.physics.fields` defines every per-frame feature (one table of name, unit and
definition) and computes them on batches of frames; :mod:`arflare.physics.table` reads an
indexed shard set, caches the per-frame table per data fingerprint and adds each feature's
change over 1 h and 6 h from the same active region's history. Neither imports torch.
"""
