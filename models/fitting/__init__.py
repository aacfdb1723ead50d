"""The weights-free multi-view fit: the closed-form landmark pose, photometric consistency, and the
coarse-to-fine L-BFGS fit of identity, per-view expressions and poses."""
