"""The data stages, one module per verb: ``ingest`` (with ``manifest``: reading sample files),
``consensus`` (with ``agreement`` and ``consensus_report``), ``split`` and ``datasets``
(the per-criterion SFT data)."""
