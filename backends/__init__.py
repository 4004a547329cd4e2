"""Framework backends of fpbench: one package per framework.

Each defines a :class:`fpbench.Backend` subclass registered by name in
``fpbench.registry.BACKENDS``.
"""
