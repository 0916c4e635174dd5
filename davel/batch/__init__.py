"""Batches of videos: the per-video work (``tasks``), its records (``records``) and
the engines that run it (the one-machine runner; Ray in ``ray_engine``).

Every engine calls the same :meth:`Task.process` for a video, so the outputs,
the report lines and the exit codes do not depend on how the batch was run.
"""
