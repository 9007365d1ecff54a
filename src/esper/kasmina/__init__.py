"""The morphogenetic model: blend ops, alpha controller, gating, isolation, blueprints, hosts, slots."""
