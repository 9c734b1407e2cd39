"""The customer store: canonical tables, connection, CSV import, demo data."""

from .db import Store, open_store
from .models import Base, Customer, Event, InsurancePolicy

__all__ = ["Base", "Customer", "Event", "InsurancePolicy", "Store", "open_store"]
