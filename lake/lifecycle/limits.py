"""The default retention limits (issue 3) and vacuum's floor; light to import (the CLI's help shows them)."""

DEFAULT_BRONZE_DAYS = 90
DEFAULT_SILVER_DAYS = 730  # 2 years
DEFAULT_GOLD_DAYS = 1825  # 5 years
#: deltalake refuses a shorter vacuum retention unless told (``enforce_retention_duration=False``).
MIN_VACUUM_HOURS = 168
DEFAULT_VACUUM_HOURS = MIN_VACUUM_HOURS
