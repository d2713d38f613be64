"""After the matcher: a private room per pair, one notification per user, the vector
index's metadata, and the reconciler that finishes what an outage left half done.

- ``handlers``: the rooms, notifier and index-state batch handlers (idempotent);
- ``app``: builds and runs the three agents and the reconciler;
- ``commands``: ``mosaic postmatch``, ``mosaic reconciler``, ``mosaic reconcile`` and
  ``mosaic cycle status``.

docs/postmatch.md describes the whole.
"""
