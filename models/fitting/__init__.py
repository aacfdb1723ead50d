"""The weights-free multi-view fit: the closed-form landmark pose, landmark and photometric terms, and the
coarse-to-fine Levenberg-Marquardt fit of identity, per-view expressions and poses."""
