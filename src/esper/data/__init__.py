"""Tasks and datasets: embedded defaults and local-folder loaders (nothing is downloaded)."""
