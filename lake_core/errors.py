"""The project's errors: one module, so callers can catch them precisely.

A ``LakeError`` is a user-facing failure: the CLI prints its message as one
line on stderr and exits with its ``exit_code``, never with a traceback.
"""


class LakeError(Exception):
    exit_code = 1


class ConfigError(LakeError):
    """A bad flag or environment variable."""

    exit_code = 2


class BrokerUnavailableError(LakeError):
    """No Kafka-protocol broker answers at the bootstrap address."""

    exit_code = 3


class BrokerStartError(LakeError):
    exit_code = 3


class LakeDataError(LakeError):
    """Input data that cannot be processed (a corrupt file, a bad CSV row...)."""

    exit_code = 4


class QualityGateFailed(LakeError):
    """A batch failed its quality gate and was not published."""

    exit_code = 5


class AirflowStackError(LakeError):
    """The local Airflow (``lake airflow up``) could not start or migrate its database."""

    exit_code = 6


class LedgerImbalance(LakeError):
    """An equation of the conservation ledger does not hold (``lake ledger``, contract section 10)."""

    exit_code = 6
