"""The serving graph: what every source becomes before export (see :mod:`.serving_graph`)."""
