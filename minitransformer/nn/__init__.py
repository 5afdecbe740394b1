"""Neural-network modules, built on ``minitransformer.functional``."""
from .module import Module, ModuleList, Parameter
