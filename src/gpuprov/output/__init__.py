"""Rendering for people and machines: live progress, the recap, diffs, the
JSON report, drift-check and verify formats. Reads results; runs nothing."""
