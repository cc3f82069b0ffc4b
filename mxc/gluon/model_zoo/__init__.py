"""``mx.gluon.model_zoo``: predefined networks (``vision``) and the store of their
pretrained parameters (``model_store``), as in MXNet 1.9.1."""
from . import model_store, vision

__all__ = ["model_store", "vision"]
