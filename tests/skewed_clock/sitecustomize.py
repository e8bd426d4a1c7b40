"""A host whose clock is off, for one process: put this directory first on PYTHONPATH and set
STOCKQ_TEST_CLOCK_OFFSET_S (seconds; negative: behind). Python imports `sitecustomize` at start-up,
before any other module, so time.time() and time.time_ns() read the offset clock everywhere in the
process and in its forked children (Celery's pool), as on a host whose NTP drifted.

datetime.now() and the monotonic clocks stay true: nothing of stockq's compares them across hosts, and
replacing the C `datetime` type would break the libraries that check isinstance against it.
"""

import os
import time

_offset_s = float(os.environ.get("STOCKQ_TEST_CLOCK_OFFSET_S") or 0)

if _offset_s:
    _true_time, _true_time_ns = time.time, time.time_ns
    _offset_ns = int(_offset_s * 1e9)

    def _time() -> float:
        return _true_time() + _offset_s

    def _time_ns() -> int:
        return _true_time_ns() + _offset_ns

    time.time, time.time_ns = _time, _time_ns
