"""Tests of esper.leyline (a package, so test module names do not clash with other folders)."""
