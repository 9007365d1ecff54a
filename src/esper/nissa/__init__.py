"""Telemetry: typed events and their sinks (JSONL, CSV, TensorBoard, console)."""
