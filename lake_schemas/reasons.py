"""Every reason a message can be refused at the door of Bronze.

A reason is a stable code (analysts group by it); the free-text detail
beside it in rejects says which field and what was wrong.
"""

from enum import Enum


class RejectReason(str, Enum):
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"  # malformed or truncated JSON, NaN/Infinity literals
    NOT_OBJECT = "not_object"
    UNKNOWN_SHAPE = "unknown_shape"  # an object that is neither a snapshot nor a signal
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_FIELD = "missing_field"  # a required field absent or null
    INVALID_EVENT_ID = "invalid_event_id"
    INVALID_VEHICLE_ID = "invalid_vehicle_id"
    INVALID_TS = "invalid_ts"
    INVALID_VALUE = "invalid_value"  # an optional field of the wrong type (a string for a number...)
    UNKNOWN_SIGNAL = "unknown_signal"
    MISSING_SIGNAL_VALUE = "missing_signal_value"
    # the Kafka record's own timestamp (any producer sets it) is before 2000 or more than an hour
    # after the ingest's clock: refused whatever the payload, so it can never open a future hour
    RECORD_TIMESTAMP_OUT_OF_RANGE = "record_timestamp_out_of_range"
    VEHICLE_MISMATCH = "vehicle_mismatch"  # the MQTT bridge's DLQ: a payload naming another vehicle than its topic

    def __str__(self) -> str:  # so f-strings print the code, not the enum name
        return self.value


ALL_REASONS = tuple(r.value for r in RejectReason)
