"""The Ray layer: the only place that imports Ray. Train wiring (train.py), Tune wiring (tune.py),
search spaces (spaces.py), results tables (results.py) and connecting to a cluster (cluster.py)."""
