"""Whole runs (train, ppo, eval): compose data, model, engine, controller and sinks; own the run folder."""
