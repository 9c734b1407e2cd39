"""Planning a day: which touches are due, on which channel, at what time, or why not."""

from .planner import due_touches, plan_day
from .touch import Touch, touch_key

__all__ = ["Touch", "due_touches", "plan_day", "touch_key"]
