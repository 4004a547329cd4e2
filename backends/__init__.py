"""Framework backends of fpbench: one module or package per framework, each importing it lazily.

Each defines a :class:`fpbench.Backend` subclass registered by name in
``fpbench.registry.BACKENDS``.
"""
