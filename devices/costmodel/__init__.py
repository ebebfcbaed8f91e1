"""Roofline cost model: op lists (ops.py), the in-repo zoo (zoo.py), artifact parsing (parse.py),
the per-op model (roofline.py) and its fit to published latencies (fit.py, fitted.json).
The public entry point is `edgeconv.devices.predict.predict`."""
