"""The authors' networks, module for module and key for key: DRN-D-38 features, the pose regressor, the
feature pyramids, the step-size and adaptive-basis nets, :class:`~models.networks.fnrmvs_net.FNRMVSNet`,
and loading their checkpoints unchanged."""
