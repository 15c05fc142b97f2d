"""Former home of :class:`fewlabel.handlers.TrainingState` (an ignite handler); the names stay importable from here."""

from fewlabel.handlers.training_state import TrainingState, generator_state, random_components, set_generator_state

__all__ = ["TrainingState", "generator_state", "random_components", "set_generator_state"]
