"""Framework backends of fpbench: one module or package per framework.

Each module defines a :class:`fpbench.Backend` subclass registered by name in
``fpbench.registry.BACKENDS``.
"""
