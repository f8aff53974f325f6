"""The framework every subsystem and source is built on: bus, topics, store, errors, supervision."""
