"""Model registry: versions of trained artifacts and which one is active (live) per model name."""
from __future__ import annotations

from typing import Optional

from sqlalchemy import select, update

from .db import session_scope, utcnow
from .schema import MODEL_STATUSES, ModelVersion


def _as_dict(m: ModelVersion) -> dict:
    return {"name": m.name, "version": m.version, "artifact_path": m.artifact_path,
            "metrics": m.metrics or {}, "status": m.status, "data_version": m.data_version,
            "created_at": m.created_at.isoformat() + "Z"}


def register_model(url: str, name: str, version: str, artifact_path: str, metrics: Optional[dict] = None,
                   data_version: Optional[str] = None, status: str = "candidate") -> dict:
    """Record a trained artifact. Registering the same (name, version) again returns the existing row."""
    if status not in MODEL_STATUSES:
        raise ValueError(f"status must be one of {MODEL_STATUSES}, got {status!r}")
    with session_scope(url) as s:
        existing = s.execute(select(ModelVersion).where(ModelVersion.name == name,
                                                        ModelVersion.version == version)).scalar_one_or_none()
        if existing is not None:
            return _as_dict(existing)
        m = ModelVersion(name=name, version=version, artifact_path=str(artifact_path), metrics=metrics or {},
                         data_version=data_version, status="candidate", created_at=utcnow())
        s.add(m)
        s.flush()
        out = _as_dict(m)
    if status == "active":
        return promote(url, name, version)
    if status != "candidate":
        with session_scope(url) as s:
            s.execute(update(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
                      .values(status=status))
        out["status"] = status
    return out


def promote(url: str, name: str, version: str) -> dict:
    """Make ``version`` the active one; the previously active version is retired (kept)."""
    with session_scope(url) as s:
        m = s.execute(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
                      ).scalar_one_or_none()
        if m is None:
            raise LookupError(f"no model {name!r} version {version!r}")
        s.execute(update(ModelVersion).where(ModelVersion.name == name, ModelVersion.status == "active",
                                             ModelVersion.version != version).values(status="retired"))
        m.status = "active"
        s.flush()
        return _as_dict(m)


def reject(url: str, name: str, version: str) -> None:
    with session_scope(url) as s:
        s.execute(update(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
                  .values(status="rejected"))


def active_model(url: str, name: str) -> Optional[dict]:
    with session_scope(url) as s:
        m = s.execute(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.status == "active")
                      .order_by(ModelVersion.id.desc())).scalars().first()
        return _as_dict(m) if m is not None else None


def find_model(url: str, name: str, *, data_version: str) -> Optional[dict]:
    """The newest version of ``name`` trained on ``data_version`` (for idempotent training)."""
    with session_scope(url) as s:
        m = s.execute(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.data_version == data_version)
                      .order_by(ModelVersion.id.desc())).scalars().first()
        return _as_dict(m) if m is not None else None


def already_trained(url: str, name: str, key: str, job_detail: Optional[dict] = None) -> Optional[dict]:
    """What an idempotent training job returns when ``key`` (its data version) needs no run: the
    registered version, marked ``skipped``; with ``job_detail`` (the job claimed elsewhere or done
    without a version) always a result, else ``None`` when nothing is registered yet."""
    row = find_model(url, name, data_version=key)
    if row is None and job_detail is None:
        return None
    return dict(row or {"data_version": key, **job_detail}, skipped=True)


def list_models(url: str, name: Optional[str] = None) -> list[dict]:
    with session_scope(url) as s:
        q = select(ModelVersion).order_by(ModelVersion.id.desc())
        if name is not None:
            q = q.where(ModelVersion.name == name)
        return [_as_dict(m) for m in s.execute(q).scalars()]
