"""The standing adversarial suite: hostile bundles × deliveries × doors (see ``craft.py``, ``doors.py``)."""
