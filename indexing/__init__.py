"""Build-time code: read and clean ``trn.json``, generate synthetic catalogs, build retrieval indexes."""
