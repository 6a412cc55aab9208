"""StreamRank's Feast feature repository, built programmatically from Settings.

definitions  entities, views, features, TTLs (plain-Python schema)
objects      the Feast objects built from definitions + features (on demand), their fingerprint
store        get_store / apply_definitions (feature_store.yaml, SQL registry, online/offline stores)
statistics   point-in-time windowed statistics of the event log (the aggregation engine's views;
             windows: its windowed core and helpers)
parquet      its frames -> Parquet -> materialize;  statistics_job: run_statistics, the job
realtime     real-time counters and recent lists as of an instant -> push
features     the model's inputs: GBDT_FEATURE_REFS, derive_features, FEATURE_COLUMNS; the id lists
             of the sequence ranker: SEQUENCE_REFS, SEQUENCE_COLUMNS, expire_lists
online       serving reads (user rows per request, stream rows for the snapshot) and assembly

Nothing here imports Feast at module level.
"""
