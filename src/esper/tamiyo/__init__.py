"""Controllers that decide lifecycle actions: the heuristic, the learned policy, features, masks."""
