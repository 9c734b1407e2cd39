"""Caretouch: customer-care automation engine.

The core (store, rules, plan, render, channels, ledger) never imports Airflow; only
``caretouch.airflow`` does, and the DAG files import only that.
"""

__version__ = "0.1.0"
