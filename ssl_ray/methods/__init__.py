"""SSL methods, one file each, registered by name. See base.py for the interface."""
from .base import Method
from .registry import get_method, list_methods, register

__all__ = ["Method", "get_method", "list_methods", "register"]
