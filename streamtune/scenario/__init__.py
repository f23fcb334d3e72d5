"""The adaptation scenario: the streams it replays (``build``) and the scored run through the
real processes (``runner``), shared by ``streamtune demo``, ``bench adapt`` and the loop test."""
