"""Operator commands: ``mosaic run`` (supervisor), ``mosaic deadletters``, consumer lag."""
