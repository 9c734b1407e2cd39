"""The customer store: canonical tables, connection, CSV import, demo data."""

from .db import Store, open_store
from .models import Base, Customer, Event, Policy

__all__ = ["Base", "Customer", "Event", "Policy", "Store", "open_store"]
