"""Training: the EG objective, the LightningModule, callbacks and loggers."""

from .module import DRMMLitModule, NonFiniteLossError
from .objective import EGObjective, StepOutput

__all__ = ["DRMMLitModule", "EGObjective", "NonFiniteLossError", "StepOutput"]
