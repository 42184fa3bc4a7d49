"""Gold: one Silver day -> ``gold/vehicle_hourly``, ``gold/zone_hourly``, ``gold/vehicle_state``.

``ReadSilverDay | ShardByVehicle | ComputeGold | CommitGold``.
"""
