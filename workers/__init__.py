"""Celery app, beat schedule and thin idempotent tasks (Celery's ``proj/`` layout)."""
