"""Business events: the durable inbox, the Redis Stream intake and event-touch planning.

Every intake path (Redis Stream, Airflow REST API, ``care event emit``, CSV) hands events to
``inbox.submit``, which commits them to the ``events`` table exactly once per ``event_id``
(or to ``event_dead_letters`` with the reason) before anything acts on them. ``planning``
then plans the touches of events not yet planned. See docs/events.md.
"""
