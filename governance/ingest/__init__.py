"""The collection pipeline: adapter → validate → quality → store, with quarantine for every failure."""
