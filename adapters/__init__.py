"""Feed adapters: one module per feed family, each turning raw messages into standard entities.

Adapters are registered under the ``citygov.adapters`` entry-point group, so a city can ship its own
in a separate package; :func:`adapters.base.registered_adapters` lists them.
"""
