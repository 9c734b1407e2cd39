"""The customer store: tables, connection, CSV import, consent, synthetic population, demo."""

from .db import Store, open_store
from .models import Base, Customer, Event, InsurancePolicy

__all__ = ["Base", "Customer", "Event", "InsurancePolicy", "Store", "open_store"]
