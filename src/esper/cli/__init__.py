"""The esper command-line interface."""
