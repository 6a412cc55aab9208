"""One typed settings object, read from ``STREAMRANK_*`` environment variables.

Nothing here reads the environment at import time: call :meth:`Settings.from_env`.
Defaults are the embedded setup (SQLite, serverless Celery broker, SQLite Feast online
store, DuckDB offline store) under a local ``var/`` folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Optional


@dataclass(frozen=True)
class Settings:
    home: Path = Path("var")                 # STREAMRANK_HOME: root of every embedded resource
    database_url: str = ""                   # STREAMRANK_DATABASE_URL (default sqlite under home)
    broker_url: str = ""                     # STREAMRANK_BROKER_URL (default sqla+sqlite under home)
    result_backend: str = ""                 # STREAMRANK_RESULT_BACKEND (default db+sqlite under home)
    feast_repo: Path = Path()                # STREAMRANK_FEAST_REPO (default home/feast)
    feast_online: str = "sqlite"             # STREAMRANK_FEAST_ONLINE: "sqlite" or "redis://host:port/db"
    artifact_dir: Path = Path()              # STREAMRANK_ARTIFACT_DIR (default home/artifacts)
    api_key: Optional[str] = field(default=None, repr=False)   # STREAMRANK_API_KEY: required on write routes when set
    port: int = 8000                         # STREAMRANK_PORT
    snapshot_interval_s: float = 1.0         # STREAMRANK_SNAPSHOT_INTERVAL_S: candidate feature refresh
    stats_bucket_s: int = 3600               # STREAMRANK_STATS_BUCKET_S: batch statistics cadence
    broker_polling_s: float = 0.05           # STREAMRANK_BROKER_POLLING_S: serverless broker polling
    job_lease_s: float = 60.0                # STREAMRANK_JOB_LEASE_S: a job whose heartbeat is older is re-run
    journal_dir: Path = Path()               # STREAMRANK_JOURNAL_DIR: impression journal (default home/journal)
    journal_fsync: str = "everysec"          # STREAMRANK_JOURNAL_FSYNC: always | everysec | no (api/journal.py)
    journal_max_events: int = 100_000        # STREAMRANK_JOURNAL_MAX_EVENTS: backlog bound per API process
    journal_flush_s: float = 0.2             # STREAMRANK_JOURNAL_FLUSH_S: journal -> event log cadence
    read_timeout_s: float = 10.0             # STREAMRANK_READ_TIMEOUT_S: a client silent this long mid-request is dropped
    max_body_bytes: int = 1024 * 1024        # STREAMRANK_MAX_BODY_BYTES: larger request bodies get 413
    worker_metrics_port: int = 0             # STREAMRANK_WORKER_METRICS_PORT: Celery workers' /metrics (0 = off)
    beat_schedule: str = ""                  # STREAMRANK_BEAT_SCHEDULE: beat overrides, "ENTRY=SECONDS|off,..."
                                             #   (workers/celery_app.py; empty = the default schedule)
    explore_share: float = 0.1               # STREAMRANK_EXPLORE_SHARE: page slots for cold streams (Thompson; 0 = off)
    explore_cold_below: int = 100            # STREAMRANK_EXPLORE_COLD_BELOW: impressions (30 d) under which a stream is cold
    randomise_share: float = 0.01            # STREAMRANK_RANDOMISE_SHARE: requests with the top-K order randomised
    randomise_top: int = 10                  # STREAMRANK_RANDOMISE_TOP: K
    rerank_width: int = 3                    # STREAMRANK_RERANK_WIDTH: page re-ranking beam width (1 greedy, 0 off)
    rerank_top: int = 10                     # STREAMRANK_RERANK_TOP: slots re-ranked under the diversity constraints
    rerank_max_per_category: int = 3         # STREAMRANK_RERANK_MAX_PER_CATEGORY: per category in the top slots (0 = no cap)
    slate_model: str = ""                    # STREAMRANK_SLATE_MODEL: a trained policy.slate_model file (empty: ranker scores)
    item_vectors: str = ""                   # STREAMRANK_ITEM_VECTORS: item_id → vector file the ranker's item tokens take
                                             #   (ranking/item_vectors.py: .npz / .parquet / .csv; empty: none)
    fusion: str = "fixed"                    # STREAMRANK_FUSION: fixed | personalised | global (ranking/fusion.py:
                                             #   the task weights from the user's features, or one fitted vector)
    fusion_utility: str = "click=1,purchase=1,stay_min=1"   # STREAMRANK_FUSION_UTILITY: what the fusion maximises

    def __post_init__(self) -> None:
        home = Path(self.home)
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{(home / 'streamrank.db').resolve()}")
        if not self.broker_url:
            object.__setattr__(self, "broker_url", f"sqla+sqlite:///{(home / 'celery-broker.db').resolve()}")
        if not self.result_backend:
            object.__setattr__(self, "result_backend", f"db+sqlite:///{(home / 'celery-results.db').resolve()}")
        if str(self.feast_repo) in ("", "."):
            object.__setattr__(self, "feast_repo", home / "feast")
        if str(self.artifact_dir) in ("", "."):
            object.__setattr__(self, "artifact_dir", home / "artifacts")
        if str(self.journal_dir) in ("", "."):
            object.__setattr__(self, "journal_dir", home / "journal")
        object.__setattr__(self, "journal_dir", Path(self.journal_dir).resolve())
        if self.journal_fsync not in ("always", "everysec", "no"):
            raise ValueError(f"STREAMRANK_JOURNAL_FSYNC must be always, everysec or no, got {self.journal_fsync!r}")
        object.__setattr__(self, "feast_repo", Path(self.feast_repo).resolve())
        object.__setattr__(self, "artifact_dir", Path(self.artifact_dir).resolve())
        if not 0.0 <= self.explore_share < 1.0:
            raise ValueError(f"STREAMRANK_EXPLORE_SHARE must be in [0, 1), got {self.explore_share}")
        if not 0.0 <= self.randomise_share <= 1.0:
            raise ValueError(f"STREAMRANK_RANDOMISE_SHARE must be in [0, 1], got {self.randomise_share}")
        if self.randomise_top < 2 or self.explore_cold_below < 0:
            raise ValueError("STREAMRANK_RANDOMISE_TOP must be >= 2 and STREAMRANK_EXPLORE_COLD_BELOW >= 0")
        if self.rerank_width < 0 or self.rerank_top < 1 or self.rerank_max_per_category < 0:
            raise ValueError("STREAMRANK_RERANK_WIDTH and _MAX_PER_CATEGORY must be >= 0 and STREAMRANK_RERANK_TOP >= 1")
        if self.fusion not in ("fixed", "personalised", "global"):
            raise ValueError(f"STREAMRANK_FUSION must be fixed, personalised or global, got {self.fusion!r}")
        self.fusion_utility_weights              # a malformed STREAMRANK_FUSION_UTILITY fails here, not in a job
        if not (self.feast_online == "sqlite" or self.feast_online.startswith(("redis://", "rediss://"))):
            raise ValueError(f"STREAMRANK_FEAST_ONLINE must be 'sqlite' or a redis:// URL, got {self.feast_online!r}")

    @property
    def fusion_utility_weights(self) -> dict:
        """STREAMRANK_FUSION_UTILITY as {click, purchase, stay_min} weights (missing ones: 0)."""
        out = {}
        for part in filter(None, (p.strip() for p in self.fusion_utility.split(","))):
            name, _, value = part.partition("=")
            name = name.strip()
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = None
            if name not in ("click", "purchase", "stay_min") or out[name] is None or out[name] < 0:
                raise ValueError("STREAMRANK_FUSION_UTILITY must be 'click=A,purchase=B,stay_min=C' with "
                                 f"non-negative numbers, got {self.fusion_utility!r}")
        if not any(out.values()):
            raise ValueError(f"STREAMRANK_FUSION_UTILITY needs one positive weight, got {self.fusion_utility!r}")
        return out

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        env = os.environ if environ is None else environ
        kwargs = {}
        for f in fields(cls):
            raw = env.get(f"STREAMRANK_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            if f.name in ("home", "feast_repo", "artifact_dir", "journal_dir"):
                kwargs[f.name] = Path(raw)
            elif f.name in ("port", "stats_bucket_s", "journal_max_events", "max_body_bytes", "worker_metrics_port",
                            "explore_cold_below", "randomise_top", "rerank_width", "rerank_top",
                            "rerank_max_per_category"):
                try:
                    kwargs[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"STREAMRANK_{f.name.upper()} must be an integer, got {raw!r}") from None
            elif f.name in ("snapshot_interval_s", "broker_polling_s", "job_lease_s", "journal_flush_s",
                            "read_timeout_s", "explore_share", "randomise_share"):
                try:
                    kwargs[f.name] = float(raw)
                except ValueError:
                    raise ValueError(f"STREAMRANK_{f.name.upper()} must be a number, got {raw!r}") from None
            else:
                kwargs[f.name] = raw
        kwargs.update(overrides)
        return cls(**kwargs)

    def ensure_dirs(self) -> "Settings":
        """Create the local folders the embedded setup writes to."""
        for p in (self.home, self.feast_repo, self.artifact_dir):
            Path(p).mkdir(parents=True, exist_ok=True)
        return self

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def to_env(self) -> dict:
        """The environment that reproduces these settings in a child process (worker, gunicorn)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f"STREAMRANK_{f.name.upper()}"] = str(v)
        return out
