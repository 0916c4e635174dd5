"""``python tests/hooked_davel.py HOOKS ARGS...``: ``davel ARGS...`` with the batch's inputs
misbehaving as HOOKS says (``"KIND:NAME[,KIND:NAME...]"``, see batch_hooks.py).

Run as a script, this folder is ``sys.path[0]``; the batch's worker processes are
spawned with the parent's ``sys.path``, so they unpickle the hooked task from
``batch_hooks`` too.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    import batch_hooks

    from davel.cli import main

    batch_hooks.install(sys.argv[1])
    sys.argv = ["davel", *sys.argv[2:]]
    main()
