"""Framework backends of fpbench: one module per framework, each importing it lazily.

Each module defines a :class:`fpbench.Backend` subclass registered by name in
``fpbench.registry.BACKENDS``.
"""
