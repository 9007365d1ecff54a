"""Tests of esper.kasmina (a package, so test module names do not clash with other folders)."""
