"""SQLAlchemy 2 schema: catalog, event log, impressions, model registry, job runs.

Timestamps are stored as naive UTC ``DateTime`` (microsecond precision on SQLite and
PostgreSQL); :func:`store.db.utc` converts on the way in and out.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EVENT_TYPES = ("impression", "click", "watch", "item_click", "purchase")
MODEL_STATUSES = ("candidate", "active", "retired", "rejected")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    attributes: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)


class Item(Base):
    __tablename__ = "items"
    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    category: Mapped[int] = mapped_column(BigInteger, default=0)
    price: Mapped[float] = mapped_column(Float, default=0.0)


class Stream(Base):
    """A live-stream room (a channel); when it is on air is given by :class:`LiveWindow`."""
    __tablename__ = "streams"
    stream_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    streamer_id: Mapped[int] = mapped_column(BigInteger, default=0)
    category: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)


class LiveWindow(Base):
    """One broadcast of a stream: it is live for ``start_ts <= t < end_ts``."""
    __tablename__ = "live_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("streams.stream_id"), index=True)
    start_ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    end_ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    __table_args__ = (UniqueConstraint("stream_id", "start_ts", name="uq_live_window"),)


class StreamItem(Base):
    __tablename__ = "stream_items"
    stream_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("streams.stream_id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.item_id"), primary_key=True)
    is_core: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """The append-only event log. ``event_id`` is chosen by the client: re-sending is a no-op."""
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    type: Mapped[str] = mapped_column(String(16))
    stream_id: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True, index=True)
    item_id: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    request_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    position: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    page: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    value: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    propensity: Mapped[Optional[float]] = mapped_column(Float, nullable=True)     # impressions: P(stream at slot)
    policy: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)      # impressions: what chose it


class Impression(Base):
    """Typed projection of impression events: one row per (request, shown stream)."""
    __tablename__ = "impressions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    request_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    stream_id: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    page: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    model_version: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    propensity: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    policy: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)


class ModelVersion(Base):
    """The model registry: which artifact version exists and which one is live."""
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    artifact_path: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    data_version: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_version"),
                      Index("ix_models_name_status", "name", "status"))


class PushOutbox(Base):
    """Event batches whose real-time push has not been acknowledged yet (store.outbox): written in
    the batch's own transaction, deleted by the push task, re-sent by the workers when stale."""
    __tablename__ = "push_outbox"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    sent_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)   # last (re-)send
    event_ids: Mapped[list] = mapped_column(JSON)


class JobRun(Base):
    """One run of a background job, keyed by its input version so a re-run is a no-op."""
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")   # running|done|failed
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    detail: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    # the lease (store.jobs): who runs it, when it last said so, and the Celery task to re-send
    owner: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime, nullable=True)
    task_name: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    task_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    kwargs: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    __table_args__ = (UniqueConstraint("task", "key", name="uq_job_run"),)
