"""Runs the tests marked `slow` first: with `pytest -n 2` a long test started last would run alone at the end, while
started first it overlaps the many short ones on the other worker (longest-first scheduling)."""


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # Stable: the order is otherwise kept.
