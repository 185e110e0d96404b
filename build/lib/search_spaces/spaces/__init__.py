"""Built-in search spaces (YAML files read with importlib.resources)."""
