"""The ground floor: what every part of the lake stands on.

``errors``, ``settings`` (every environment variable, one typed object),
``storage`` (filesystems, whole-file writes), ``delta`` (Delta helpers,
commit retries), ``bronze`` (Bronze's file layout: names, groups, markers,
hours), ``registry`` (the ``dims/vehicles`` table), ``kafka_admin`` and
``processes`` (helper processes, pids, ports).

Imports only ``lake_schemas`` and third-party libraries; every other
package of ours may import it (``tests/test_layers.py`` checks both).
"""
