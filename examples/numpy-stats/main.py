"""A Lambda-style function that needs numpy: statistics of the numbers it is given."""

import numpy as np


def handler(event, context):
    values = np.asarray(event.get("values", [1, 2, 3, 4]), dtype=float)
    a = np.arange(16, dtype=float).reshape(4, 4) + np.eye(4)
    return {"mean": float(values.mean()), "std": float(values.std()),
            "det": round(float(np.linalg.det(a)), 6), "numpy": np.__version__}
