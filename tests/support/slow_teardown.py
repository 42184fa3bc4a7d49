"""A helper's warm module whose interpreter teardown takes seconds, as Great Expectations' does."""

import time


class _SlowToCollect:
    def __del__(self) -> None:
        time.sleep(5)


KEPT = _SlowToCollect()  # collected when the interpreter tears its modules down
