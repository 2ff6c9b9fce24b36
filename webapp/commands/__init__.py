"""Command groups of the ``marketplace`` CLI, one module each; ``webapp.cli`` registers them all.

Each module defines ``register(main: click.Group) -> None``.
"""
