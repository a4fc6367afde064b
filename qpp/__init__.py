"""Query performance prediction (QPP) on the caption queries of a run, and QPP-weighted fusion (docs/QPP.md).

Imports only retrieval/, fusion/, utils/ and data.text_features; never model/ or trainer/.
"""
import os as _os

# OpenMP threads that busy-wait (libgomp's default) make xgboost with n_jobs=2 up to 10x slower on a shared 2-core
# machine; passive waiting costs nothing when the cores are free. Must be set before libgomp loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
