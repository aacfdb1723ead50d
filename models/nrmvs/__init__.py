"""The learned non-rigid multi-view stereo optimisation: its configuration, the feature-metric and landmark
energy, feature sampling with the authors' gradient, the unrolled gradient steps and what they record."""
