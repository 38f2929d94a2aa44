"""The batch pipeline: records through the rules against state, one flow per module.

No Kafka and no Faust here: a flow takes a batch of ``InputRecord``s (``records``) and a
store-backed state, and returns what to emit and what to change, for the worker
(``streams.worker``) to produce and checkpoint.

- ``route``: the input topic, in any partitioning: dead letters, passthroughs, and the
  events forwarded by anonymous id to the repartition topic;
- ``stitch``: one partition's events, then the merge limit's answers, then erase and
  un-merge commands, against its ``PartitionState``;
- ``arbitrate``: one partition of the claims topic against its ``ClaimState`` (the merge
  limit).

Each counts what happens into ``Counters`` (``counts``).
"""
